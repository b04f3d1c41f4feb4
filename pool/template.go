package pool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"

	"github.com/hashicorp/nomad/api"
)

// Meta keys the template job carries; dispatched children inherit them, so
// the job list (with meta) tells pool, node, task and template version apart.
const (
	metaPool     = "agentkernel_pool"
	metaNode     = "agentkernel_pool_node"
	metaNodeName = "agentkernel_pool_node_name"
	metaTask     = "agentkernel_pool_task"
	metaHash     = "agentkernel_pool_template"
	metaSize     = "agentkernel_pool_size"
	metaMax      = "agentkernel_pool_max"
	// metaDispatcher is the only dispatch meta key: the Manager instance that
	// dispatched a child. Nomad rejects dispatch meta the job does not
	// declare, so it is declared in meta_optional.
	metaDispatcher = "agentkernel_pool_dispatcher"
)

// warmTemplate is a pool's template job as registered.
type warmTemplate struct {
	job    *api.Job
	hash   string // of the job without size, max and what node fills in
	task   string
	placed bool              // node defaults (datacenters, node pool, name) were known
	source [sha256.Size]byte // of the jobspec file, to notice edits cheaply
	size   int
	max    int
	ready  *readySpec // its readiness check (ready.go); nil for none
}

// ensureTemplate (re)registers pool p's template job when the jobspec file,
// size or max changed since the last registration, or it never happened;
// with force it also checks that Nomad still has the job as registered.
// A failure is recorded on the pool (Stats.Error) and returned; the last
// good template, if any, stays in use.
func (m *Manager) ensureTemplate(ctx context.Context, p *pool, force bool) error {
	m.mu.Lock()
	cur, cfgErr := p.tmpl, validateConfig(p.cfg)
	m.mu.Unlock()
	if cfgErr != nil {
		return cfgErr
	}
	err := func() error {
		data, err := os.ReadFile(p.cfg.Jobspec)
		if err != nil {
			return fmt.Errorf("pool %q: read jobspec: %w", p.cfg.Name, err)
		}
		sum := sha256.Sum256(data)
		t := cur
		m.mu.Lock()
		nodeKnown := m.node != nil
		m.mu.Unlock()
		if cur == nil || cur.source != sum || cur.size != p.cfg.Size || cur.max != p.cfg.Max || (!cur.placed && nodeKnown) {
			if t, err = m.buildTemplate(ctx, p, data); err != nil {
				return err
			}
			t.source = sum
		} else if !force {
			return nil
		}
		if err := m.register(ctx, p, t); err != nil {
			return err
		}
		if t != cur {
			m.mu.Lock()
			if cur != nil && cur.hash != t.hash {
				p.resetFailures() // a new template gets a fresh try at once
			}
			p.tmpl = t
			m.rebuildLocked() // candidates depend on the current hash
			m.mu.Unlock()
			m.kickReplenish()
		}
		return nil
	}()
	m.mu.Lock()
	p.err = err
	m.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		m.log.Error("warm template not registered", "pool", p.cfg.Name, "jobspec", p.cfg.Jobspec, "error", err)
	}
	return err
}

// buildTemplate parses jobspec data through the Nomad API and overlays the
// pool mechanics.
func (m *Manager) buildTemplate(ctx context.Context, p *pool, data []byte) (*warmTemplate, error) {
	var job api.Job
	req := &api.JobsParseRequest{JobHCL: string(data)}
	err := call(ctx, retryAttempts, func(ctx context.Context) error {
		_, err := m.client.Raw().Write("/v1/jobs/parse", req, &job, m.writeOpts(ctx, m.namespace))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pool %q: parse jobspec %s: %w", p.cfg.Name, p.cfg.Jobspec, denied(err, "parse-job or submit-job in namespace "+strconv.Quote(m.namespace)))
	}
	m.mu.Lock()
	node := m.node
	m.mu.Unlock()
	t, err := overlay(&job, p.cfg, m.nodeID, m.namespace, node)
	if err == nil && t.ready != nil && t.ready.command != "" && m.checkReadyFn == nil {
		return nil, fmt.Errorf("pool %q: jobspec %s: task %q: meta %s: this pool manager cannot run a ready command (no Options.CheckReady)", p.cfg.Name, p.cfg.Jobspec, t.task, metaReady)
	}
	return t, err
}

// overlay checks that job is a usable warm template and adds only the pool
// mechanics: ID, type, parameterization, node pinning, meta, no restarts and
// no reschedules. node, when known, fills datacenters and node pool the
// template leaves unset.
func overlay(job *api.Job, c Config, nodeID, namespace string, node *api.Node) (*warmTemplate, error) {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("pool %q: jobspec %s: %s: %s", c.Name, c.Jobspec, field, fmt.Sprintf(format, args...))
	}
	if len(job.TaskGroups) != 1 {
		return nil, bad("group", "want exactly one group, found %d", len(job.TaskGroups))
	}
	tg := job.TaskGroups[0]
	if len(tg.Tasks) != 1 {
		return nil, bad("task", "want exactly one task in group %q, found %d", deref(tg.Name), len(tg.Tasks))
	}
	if tg.Count != nil && *tg.Count != 1 {
		return nil, bad("count", "group %q has count %d; each warm instance is one allocation, so count must be 1", deref(tg.Name), *tg.Count)
	}
	if job.Periodic != nil {
		return nil, bad("periodic", "a warm template cannot be periodic")
	}
	if job.Multiregion != nil {
		return nil, bad("multiregion", "a warm template cannot be multiregion")
	}
	task := tg.Tasks[0]
	if task.Name == "" {
		return nil, bad("task", "the task has no name")
	}
	if task.DispatchPayload != nil {
		return nil, bad("dispatch_payload", "warm instances are dispatched without payload")
	}
	ready, err := parseReady(tg, task)
	if err != nil {
		return nil, bad("task "+strconv.Quote(task.Name), "%v", err)
	}

	id := ParentJobID(c.Name, nodeID)
	job.ID, job.Name, job.Namespace = &id, &id, &namespace
	job.Type = new(api.JobTypeBatch)
	job.ParameterizedJob = &api.ParameterizedJobConfig{
		Payload:      "forbidden",
		MetaOptional: []string{metaDispatcher},
	}
	job.Constraints = append(job.Constraints, &api.Constraint{
		LTarget: "${node.unique.id}", Operand: "=", RTarget: nodeID,
	})
	// Service-only and rollout blocks have no meaning for single-shot
	// batch children.
	job.Update, job.Migrate, job.Reschedule = nil, nil, nil
	tg.Update, tg.Migrate, tg.Scaling = nil, nil, nil
	tg.Count = new(1)
	// A warm instance that fails is purged and replaced by the pool, never
	// restarted or rescheduled by Nomad: either would hide the failure and
	// could hand out a half-started sandbox.
	tg.RestartPolicy = &api.RestartPolicy{Attempts: new(0), Mode: new(api.RestartPolicyModeFail)}
	task.RestartPolicy = nil
	tg.ReschedulePolicy = &api.ReschedulePolicy{Attempts: new(0), Unlimited: new(false)}

	meta := maps.Clone(job.Meta)
	if meta == nil {
		meta = map[string]string{}
	}
	meta[metaPool], meta[metaNode], meta[metaTask] = c.Name, nodeID, task.Name
	job.Meta = meta
	hash, err := templateHash(job)
	if err != nil {
		return nil, bad("job", "hash: %v", err)
	}
	meta[metaHash] = hash
	meta[metaSize], meta[metaMax] = strconv.Itoa(c.Size), strconv.Itoa(c.Max)
	// What the node fills in stays out of the hash: whether the node was
	// known when a plugin started (it may not be registered yet at agent
	// boot) must not make its warm instances look outdated to the next one.
	if node != nil {
		if len(job.Datacenters) == 0 && node.Datacenter != "" {
			job.Datacenters = []string{node.Datacenter}
		}
		if deref(job.NodePool) == "" && node.NodePool != "" {
			job.NodePool = &node.NodePool
		}
		if node.Name != "" {
			meta[metaNodeName] = node.Name
		}
	}
	return &warmTemplate{job: job, hash: hash, task: task.Name, size: c.Size, max: c.Max, placed: node != nil, ready: ready}, nil
}

// templateHash identifies what warm instances run: everything in the job
// except the bookkeeping meta that may change without touching them.
func templateHash(job *api.Job) (string, error) {
	b, err := json.Marshal(job) // map keys are sorted: stable
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}

// register registers t unless the job Nomad has already carries the same
// template hash, size and max (and is not stopped).
func (m *Manager) register(ctx context.Context, p *pool, t *warmTemplate) error {
	var cur *api.Job
	err := call(ctx, retryAttempts, func(ctx context.Context) error {
		var err error
		cur, _, err = m.client.Jobs().Info(p.jobID, m.queryOpts(ctx, m.namespace))
		if isNotFound(err) {
			cur, err = nil, nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("pool %q: read template job %s: %w", p.cfg.Name, p.jobID, denied(err, "read-job in namespace "+strconv.Quote(m.namespace)))
	}
	if cur != nil && !deref(cur.Stop) && cur.ParameterizedJob != nil && samePlacement(cur, t.job) &&
		cur.Meta[metaHash] == t.hash && cur.Meta[metaSize] == t.job.Meta[metaSize] && cur.Meta[metaMax] == t.job.Meta[metaMax] {
		m.log.Debug("warm template already registered", "pool", p.cfg.Name, "job_id", p.jobID, "template", t.hash)
		return nil
	}
	var resp *api.JobRegisterResponse
	err = call(ctx, retryAttempts, func(ctx context.Context) error {
		var err error
		resp, _, err = m.client.Jobs().Register(t.job, m.writeOpts(ctx, m.namespace))
		return err
	})
	if err != nil {
		return fmt.Errorf("pool %q: register template job %s: %w", p.cfg.Name, p.jobID, denied(err, "submit-job in namespace "+strconv.Quote(m.namespace)))
	}
	if resp.Warnings != "" {
		m.log.Warn("template job registered with warnings", "pool", p.cfg.Name, "job_id", p.jobID, "warnings", resp.Warnings)
	}
	old := ""
	if cur != nil {
		old = cur.Meta[metaHash]
	}
	m.log.Info("registered warm template", "pool", p.cfg.Name, "job_id", p.jobID, "template", t.hash, "previous", old)
	return nil
}

// samePlacement reports whether the registered job cur already has the
// datacenters, node pool and node name that want sets (Nomad fills its own
// defaults where want leaves them unset, so only what want sets counts).
func samePlacement(cur, want *api.Job) bool {
	if len(want.Datacenters) > 0 && !slices.Equal(cur.Datacenters, want.Datacenters) {
		return false
	}
	if np := deref(want.NodePool); np != "" && deref(cur.NodePool) != np {
		return false
	}
	return want.Meta[metaNodeName] == "" || cur.Meta[metaNodeName] == want.Meta[metaNodeName]
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
