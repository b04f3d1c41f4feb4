// Package sandbox runs processes inside an existing Nomad allocation on this
// node (a claimed warm sandbox) through the Nomad API, so that a launched
// command outlives the plugin process and its output and exit status can be
// followed, and followed again after a plugin restart, from nothing but a run
// id and two offsets. Every host-side access to the sandbox's files goes
// through the boundary of package allocfs. DESIGN.md beside this file is the
// design: run files, launch (one exec, or a line on a primed launch session),
// follow, signal, exec, exit status, and what survives what.
package sandbox
