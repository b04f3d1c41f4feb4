package pool

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

// Claim records. A claim is one Nomad Variable at ClaimPath(pool, alloc),
// created with check-and-set index 0, so of two claimers of one allocation
// at most one gets it; the record is what every later process (a restarted
// plugin, reconcile, `status`) knows the claim by.
//
// Write-behind (Options.WriteBehind): the record write is one raft commit,
// 2-50 ms on a dev agent depending on its load, and it is most of a warm
// start. With write-behind, Claim hands out the candidate once this Manager
// has reserved it in its inventory and writes the record in the background;
// Claim.Wait says how that ended. What keeps a claim at most once meanwhile:
//   - in this process, the reservation (the candidate is out of every view
//     the moment it is handed out, as after a written claim);
//   - in other processes, nothing needs it: candidates are this node's
//     allocations, which only this node's Manager claims;
//   - across a crash of this process before the write lands, the caller's
//     own mark of the allocation (the driver's hand-out mark, on the host
//     outside the sandbox, which its Prepare reports as ErrInUse, so the
//     next Manager never hands it out) and the caller's Adopt when it
//     recovers the claim, which writes the record.
// Write-behind is used only while the allocation watch is current: otherwise
// Claim writes first and confirms the allocation with Nomad, as without it.

// Claim record items. The record is created once and never updated, so a
// cached copy stays valid until it is deleted.
const (
	itemPool       = "pool"
	itemAlloc      = "alloc_id"
	itemJob        = "job_id"
	itemTask       = "task"
	itemNode       = "node_id"
	itemOwnerAlloc = "owner_alloc_id"
	itemOwnerTask  = "owner_task"
	itemOwnerTID   = "owner_task_id"
	itemOwnerJob   = "owner_job_id"
	itemOwnerNS    = "owner_namespace"
	itemClaimedAt  = "claimed_at"
	itemNonce      = "claim_id"
	itemReason     = "reason" // "claim", or "retire" while the pool itself purges a warm instance
)

const (
	reasonClaim  = "claim"
	reasonRetire = "retire"
)

// recordTimeout bounds a record written behind its claim, retries included.
const recordTimeout = time.Minute

// ErrClaimLost is what Claim.Wait and Adopt return when another claimer's
// record holds the allocation: the caller must stop using it.
var ErrClaimLost = errors.New("allocation claimed by someone else")

// pendingRecord is a claim record being written behind its claim.
type pendingRecord struct {
	done chan struct{} // closed when the write ended
	err  error
}

// Wait blocks until the claim's record is written, and returns nil; or
// returns why it was not: ErrClaimLost (wrapped) when another claimer's
// record holds the allocation, another error when Nomad did not take the
// write in time (the claim then stands in this process only, until
// Release), or ctx's error. A claim made without write-behind is written
// before Claim returns.
func (c *Claim) Wait(ctx context.Context) error {
	if c == nil || c.rec == nil {
		return nil
	}
	select {
	case <-c.rec.done:
		return c.rec.err
	case <-ctx.Done():
		return fmt.Errorf("wait for the claim record of allocation %s: %w", c.AllocID, ctx.Err())
	}
}

// RecordState says, without waiting, where the claim's record stands:
// "written" (or made before Claim returned), "pending" while it is written
// behind, or why it was not written.
func (c *Claim) RecordState() string {
	if c == nil || c.rec == nil {
		return "written"
	}
	select {
	case <-c.rec.done:
		if c.rec.err != nil {
			return "not written: " + c.rec.err.Error()
		}
		return "written"
	default:
		return "pending"
	}
}

func newNonce() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// reserve hands out in as claimed by owner and writes its record behind
// (write-behind). It returns nil, leaving in reserved, when the inventory
// cannot vouch that in still runs (its watch failing, or in not running):
// then the claim is written first (tryClaim).
func (m *Manager) reserve(p *pool, in *instance, owner Owner) *Claim {
	c := &Claim{
		Pool: p.cfg.Name, AllocID: in.allocID, JobID: in.jobID, TaskName: in.task,
		NodeID: m.nodeID, Owner: owner, ClaimedAt: time.Now().UTC(),
		rec: &pendingRecord{done: make(chan struct{})},
	}
	items := c.items(newNonce(), reasonClaim)
	path := ClaimPath(p.cfg.Name, in.allocID)
	hold := holdRecord()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped || m.watchErr["allocations"] != nil || !m.allocRunningLocked(in) {
		return nil
	}
	delete(m.inv.reserved, in.allocID)
	m.inv.addedClaims[in.allocID] = claimRef{pool: p.cfg.Name, path: path, index: pendingIndex}
	m.claimCache[path] = &claimRecord{claim: c, reason: reasonClaim}
	m.rebuildLocked()
	m.goFnLocked(func() { m.writeRecord(c, path, items, hold) })
	return c
}

// writeRecord writes a reserved claim's record and tells c's waiters. Its
// deadline is its own, not the Manager's: Stop waits for it, so a plugin
// that stops leaves no claim unwritten.
func (m *Manager) writeRecord(c *Claim, path string, items api.VariableItems, hold bool) {
	if hold {
		<-m.ctx.Done() // fault point: the write waits for Stop (or a crash)
	}
	ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
	defer cancel()
	began := time.Now()
	// A record of the same owner task is an earlier attempt's (a start that
	// crashed after its write left): this claim supersedes it, so it is ours.
	ours := func(ex api.VariableItems) bool { return sameNonce(items)(ex) || sameOwnerTask(c)(ex) }
	created, err := m.createClaim(ctx, path, items, ours)
	m.mu.Lock()
	switch {
	case err == nil:
		m.inv.addedClaims[c.AllocID] = claimRef{pool: c.Pool, path: path, index: created.ModifyIndex}
	case errors.Is(err, errLost):
		// Someone else's record: it stays out of our candidates until the
		// claim list shows that record; the sandbox is theirs.
		m.inv.addedClaims[c.AllocID] = claimRef{pool: c.Pool, path: path, index: m.inv.claimsIndex + 1}
		delete(m.claimCache, path)
		err = fmt.Errorf("%w: %w", ErrClaimLost, err)
	default:
		// Not written: the reservation stands (the caller holds the
		// sandbox) until Release.
	}
	m.rebuildLocked()
	m.mu.Unlock()
	if err != nil {
		m.log.Error("claim record not written", "pool", c.Pool, "alloc_id", c.AllocID, "owner_alloc_id", c.Owner.AllocID, "error", err)
	} else {
		m.log.Debug("claim record written", "pool", c.Pool, "alloc_id", c.AllocID, "took", time.Since(began))
	}
	c.rec.err = err
	close(c.rec.done)
}

// Adopt makes sure the record of a claim handed out by an earlier process
// (a task the driver recovered) exists: it writes it when it is missing (the
// process ended between hand-out and write-behind) and accepts a record of
// the same owner. A record of another owner is ErrClaimLost (wrapped).
func (m *Manager) Adopt(ctx context.Context, c *Claim) error {
	if c == nil || c.Pool == "" || c.AllocID == "" {
		return errors.New("adopt claim: claim without pool or allocation")
	}
	path := ClaimPath(c.Pool, c.AllocID)
	m.mu.Lock()
	rec := m.claimCache[path]
	m.mu.Unlock()
	if rec != nil && rec.reason == reasonClaim && rec.claim.Owner == c.Owner {
		return nil // written or read by this Manager: there
	}
	created, err := m.createClaim(ctx, path, c.items(newNonce(), reasonClaim), sameOwner(c))
	if errors.Is(err, errLost) {
		return fmt.Errorf("adopt claim of allocation %s: %w: %w", c.AllocID, ErrClaimLost, err)
	}
	if err != nil {
		return fmt.Errorf("adopt claim of allocation %s: %w", c.AllocID, err)
	}
	m.mu.Lock()
	m.inv.addedClaims[c.AllocID] = claimRef{pool: c.Pool, path: path, index: created.ModifyIndex}
	m.claimCache[path] = &claimRecord{claim: claimFromItems(created.Items), reason: reasonClaim}
	m.rebuildLocked()
	m.mu.Unlock()
	return nil
}

// sameNonce accepts an existing record written by an earlier attempt of
// the same write.
func sameNonce(items api.VariableItems) func(api.VariableItems) bool {
	return func(existing api.VariableItems) bool { return existing[itemNonce] == items[itemNonce] }
}

// sameOwner accepts an existing record of c's owner: its owner task, and
// the same attempt of it.
func sameOwner(c *Claim) func(api.VariableItems) bool {
	return func(existing api.VariableItems) bool {
		return sameOwnerTask(c)(existing) && existing[itemOwnerTID] == c.Owner.TaskID
	}
}

// sameOwnerTask accepts an existing claim record of c's owner task (same
// owner allocation and task name), whichever attempt of it wrote it.
func sameOwnerTask(c *Claim) func(api.VariableItems) bool {
	return func(existing api.VariableItems) bool {
		return c.Owner.AllocID != "" && c.Owner.TaskName != "" && existing[itemReason] == reasonClaim &&
			existing[itemOwnerAlloc] == c.Owner.AllocID && existing[itemOwnerTask] == c.Owner.TaskName
	}
}

// createClaim creates a claim record with cas=0. A record already there
// that ours accepts (an earlier attempt of the same write, or the same
// owner's) counts as success; any other is errLost.
func (m *Manager) createClaim(ctx context.Context, path string, items api.VariableItems, ours func(api.VariableItems) bool) (*api.Variable, error) {
	var created *api.Variable
	err := call(ctx, retryAttempts, func(ctx context.Context) error {
		v := &api.Variable{Namespace: m.namespace, Path: path, Items: items}
		var err error
		created, _, err = m.client.Variables().CheckedCreate(v, m.writeOpts(ctx, m.namespace))
		return err
	})
	var conflict api.ErrCASConflict
	if !errors.As(err, &conflict) {
		if err != nil {
			return nil, fmt.Errorf("create claim record %s: %w", path, denied(err, fmt.Sprintf("variables write on %s/* in namespace %q", strings.TrimSuffix(claimRoot, "/"), m.namespace)))
		}
		return created, nil
	}
	existing := conflict.Conflict
	if existing == nil || existing.Items == nil {
		// The conflict answer may carry metadata only; read the record.
		err := call(ctx, retryAttempts, func(ctx context.Context) error {
			var err error
			existing, _, err = m.client.Variables().Read(path, m.queryOpts(ctx, m.namespace))
			return err
		})
		if isNotFound(err) {
			return nil, fmt.Errorf("%w: claim record %s conflicted, then vanished", errLost, path)
		}
		if err != nil {
			return nil, fmt.Errorf("read conflicting claim record %s: %w", path, err)
		}
	}
	if ours(existing.Items) {
		return existing, nil
	}
	return nil, fmt.Errorf("%w: already claimed (%s)", errLost, path)
}

func (c *Claim) items(nonce, reason string) api.VariableItems {
	it := api.VariableItems{}
	set := func(k, v string) {
		if v != "" { // empty values carry nothing; leave them out
			it[k] = v
		}
	}
	set(itemPool, c.Pool)
	set(itemAlloc, c.AllocID)
	set(itemJob, c.JobID)
	set(itemTask, c.TaskName)
	set(itemNode, c.NodeID)
	set(itemOwnerAlloc, c.Owner.AllocID)
	set(itemOwnerTask, c.Owner.TaskName)
	set(itemOwnerTID, c.Owner.TaskID)
	set(itemOwnerJob, c.Owner.JobID)
	set(itemOwnerNS, c.Owner.Namespace)
	set(itemClaimedAt, c.ClaimedAt.Format(time.RFC3339Nano))
	set(itemNonce, nonce)
	set(itemReason, reason)
	return it
}

func claimFromItems(it api.VariableItems) *Claim {
	c := &Claim{
		Pool: it[itemPool], AllocID: it[itemAlloc], JobID: it[itemJob], TaskName: it[itemTask], NodeID: it[itemNode],
		Owner: Owner{
			AllocID: it[itemOwnerAlloc], TaskName: it[itemOwnerTask], TaskID: it[itemOwnerTID],
			JobID: it[itemOwnerJob], Namespace: it[itemOwnerNS],
		},
	}
	c.ClaimedAt, _ = time.Parse(time.RFC3339Nano, it[itemClaimedAt])
	return c
}

// readVariable reads one variable of the pool's namespace, retrying where safe.
func (m *Manager) readVariable(ctx context.Context, path string) (*api.Variable, error) {
	var v *api.Variable
	err := call(ctx, retryAttempts, func(ctx context.Context) error {
		var err error
		v, _, err = m.client.Variables().Read(path, m.queryOpts(ctx, m.namespace))
		return err
	})
	return v, err
}
