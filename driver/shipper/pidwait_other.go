//go:build !linux

package shipper

import "context"

// waitProcessExit waits until process pid has exited or ctx ends; without
// pidfds it polls alive.
func waitProcessExit(ctx context.Context, _ int, alive func() bool) error {
	return pollProcessExit(ctx, alive)
}
