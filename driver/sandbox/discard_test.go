package sandbox

import (
	"sync/atomic"
	"testing"
	"time"
)

// A discarded sandbox's session ends at once, its shell with it, and frees
// its place under MaxSessions for the next sandbox; it is not reported lost.
func TestDiscardEndsTheSessionAndFreesItsPlace(t *testing.T) {
	r, ref := localSandbox(t)
	r.MaxSessions = 1
	var lost atomic.Int32
	r.OnSessionLost = func(string) { lost.Add(1) }
	ctx := ctxT(t, 10*time.Second)
	if err := r.Prime(ctx, ref); err != nil {
		t.Fatal(err)
	}
	r.Discard(ref.AllocID)
	waitNone(t, ref, "akp-session")
	other := ref
	other.AllocID = "fedcba9876543210"
	if err := r.Prime(ctx, other); err != nil || !primed(r, other.AllocID) {
		t.Fatalf("prime after the discard: %v, primed %v; want a session", err, primed(r, other.AllocID))
	}
	if primed(r, ref.AllocID) || lost.Load() != 0 {
		t.Errorf("after Discard: primed %v, lost %d", primed(r, ref.AllocID), lost.Load())
	}
	r.Discard("0000000000000000") // none there: nothing happens
}
