package pool

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
)

// accessProbePath is a variable path under the claim root that is never
// written: the probes below use check-and-set indexes that cannot match.
const accessProbePath = claimRoot + "access-probe"

// checkAccess asks Nomad, without side effects, whether the token may do what
// claims and replenishing need but Start does not otherwise exercise: write
// and destroy claim records, and dispatch warm instances. Nomad filters lists
// by ACL instead of refusing them, so a token without these rights would
// otherwise look healthy and fail only at the first claim. Only a 403 counts;
// the expected answers (CAS conflict, rejected meta) mean the right is there.
func (m *Manager) checkAccess(ctx context.Context) error {
	var errs []error
	probe := func(what, need string, attempts int, fn func(context.Context) error) {
		err := call(ctx, attempts, fn)
		if nomadapi.StatusCode(err) == http.StatusForbidden {
			errs = append(errs, fmt.Errorf("%s: %w", what, denied(err, need)))
		}
	}
	ns := strconv.Quote(m.namespace)
	vars := fmt.Sprintf("on %s* in namespace %s", claimRoot, ns)
	// cas=1 on a path that does not exist: a conflict, never a write.
	probe("write claim record", "variables write "+vars, retryAttempts, func(ctx context.Context) error {
		_, _, err := m.client.Variables().CheckedUpdate(&api.Variable{
			Namespace: m.namespace, Path: accessProbePath, ModifyIndex: 1,
			Items: api.VariableItems{"probe": "1"},
		}, m.writeOpts(ctx, m.namespace))
		return err
	})
	probe("delete claim record", "variables destroy "+vars, retryAttempts, func(ctx context.Context) error {
		_, err := m.client.Variables().CheckedDelete(accessProbePath, 1, m.writeOpts(ctx, m.namespace))
		return err
	})
	for _, name := range m.names {
		p := m.pools[name]
		m.mu.Lock()
		registered := p.tmpl != nil
		m.mu.Unlock()
		if !registered {
			continue
		}
		// Meta the template does not declare: Nomad checks the token first,
		// then rejects the request, so nothing is dispatched. It rejects it
		// with a 500, which is not worth retrying.
		probe(fmt.Sprintf("dispatch warm instance of pool %q", name), "dispatch-job in namespace "+ns, 1, func(ctx context.Context) error {
			_, _, err := m.client.Jobs().DispatchOpts(&api.DispatchOptions{
				JobID: p.jobID, Meta: map[string]string{"agentkernel_pool_access_probe": "1"},
			}, m.writeOpts(ctx, m.namespace))
			return err
		})
		break // one pool answers for the namespace
	}
	if len(errs) > 0 {
		return fmt.Errorf("check acl token: %w", errors.Join(errs...))
	}
	return nil
}
