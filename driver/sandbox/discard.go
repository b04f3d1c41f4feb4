package sandbox

// Discard closes the launch session into a sandbox that will not be
// launched in (its pool retires it), so its connection to Nomad and its
// shell end now, not once Nomad has stopped the sandbox; it is not reported
// lost. Without a session it does nothing.
func (r *Runner) Discard(allocID string) {
	if s := r.takeSession(allocID); s != nil {
		s.close()
	}
}
