package sandbox

import (
	"context"
	"errors"
	"testing"
)

func TestExecErrorsNameAGoneSandbox(t *testing.T) {
	live := context.Background()
	for _, tc := range []struct {
		err  error
		gone bool
	}{
		{errors.New(`Unknown allocation "dcf7f405-8433-1d3b-07b4-70b04feead0c"`), true},
		{errors.New(`task "sandbox" is not running.`), true},
		{errors.New("dial tcp 127.0.0.1:4646: connect: connection refused"), false},
	} {
		if got := errors.Is(execError(live, tc.err), ErrAllocGone); got != tc.gone {
			t.Errorf("%v: gone = %v, want %v", tc.err, got, tc.gone)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := execError(ctx, errors.New("websocket: close 1006")); !errors.Is(err, context.Canceled) {
		t.Errorf("after cancel: %v", err)
	}
}
