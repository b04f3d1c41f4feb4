package sandbox

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
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

// OnCall hears of every exec through the Nomad API, under its operation,
// with the API client's error: an answer the agent refused, and no answer.
func TestOnCallHearsEveryExec(t *testing.T) {
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "Permission denied", http.StatusForbidden)
	}))
	defer refuse.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()

	type heard struct {
		op   string
		code int
		err  error
	}
	for _, tc := range []struct {
		addr string
		op   string
		code int // the answer's status; 0: none
	}{
		{refuse.URL, OpExec, http.StatusForbidden},
		{refuse.URL, OpExecSession, http.StatusForbidden},
		{down.URL, OpExec, 0},
	} {
		cfg := api.DefaultConfig()
		cfg.Address = tc.addr
		client, err := api.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var got []heard
		r := &Runner{Client: client, OnCall: func(op string, took time.Duration, err error) {
			var ue api.UnexpectedResponseError
			code := 0
			if errors.As(err, &ue) {
				code = ue.StatusCode()
			}
			got = append(got, heard{op, code, err})
		}}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = r.execAs(ctx, tc.op, Ref{AllocID: "0b6f0b6f-0000-4000-8000-000000000000", Task: "sandbox"}, false,
			[]string{"true"}, nil, io.Discard, io.Discard, nil)
		cancel()
		if err == nil {
			t.Fatalf("%s to %s: no error", tc.op, tc.addr)
		}
		if len(got) != 1 || got[0].op != tc.op || got[0].code != tc.code || got[0].err == nil {
			t.Errorf("%s to %s: OnCall heard %+v, want one %s with status %d", tc.op, tc.addr, got, tc.op, tc.code)
		}
	}
}
