package driver

import (
	"context"
	"sync"
	"time"

	"github.com/agentkernel/agentkernel-pool/internal/untrusted"
	"github.com/agentkernel/agentkernel-pool/plugin"
)

// eventHub fans task events out to the open TaskEvents streams (normally one).
type eventHub struct {
	mu   sync.Mutex
	subs map[chan plugin.TaskEvent]struct{}
}

func newEventHub() *eventHub { return &eventHub{subs: map[chan plugin.TaskEvent]struct{}{}} }

// TaskEvents implements plugin.Driver.
func (d *Driver) TaskEvents(ctx context.Context) (<-chan plugin.TaskEvent, error) {
	ch := make(chan plugin.TaskEvent, 64)
	d.events.mu.Lock()
	d.events.subs[ch] = struct{}{}
	d.events.mu.Unlock()
	go func() {
		<-ctx.Done()
		d.events.mu.Lock()
		delete(d.events.subs, ch)
		close(ch)
		d.events.mu.Unlock()
	}()
	return ch, nil
}

// emit records a task event; a stream that is not keeping up loses the event
// rather than blocking a task's start. Names and output from a sandbox are
// quoted where they enter a message (package untrusted); untrusted.Message
// escapes whatever slipped through and bounds the whole.
func (d *Driver) emit(cfg *plugin.TaskConfig, msg string, annotations map[string]string) {
	msg = untrusted.Message(msg)
	ev := plugin.TaskEvent{
		TaskID: cfg.ID, AllocID: cfg.AllocID, TaskName: cfg.Name,
		Timestamp: time.Now(), Message: msg, Annotations: annotations,
	}
	d.events.mu.Lock()
	defer d.events.mu.Unlock()
	for ch := range d.events.subs {
		select {
		case ch <- ev:
		default:
			d.logger.Warn("task event dropped: stream not keeping up", "task_id", cfg.ID, "message", msg)
		}
	}
}
