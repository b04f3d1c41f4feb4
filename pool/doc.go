// Package pool keeps per-node pools of pre-warmed Nomad allocations and hands
// them out atomically. It talks to Nomad only through the HTTP API
// (github.com/hashicorp/nomad/api) and can be used without the driver: New,
// Start, Claim or ClaimAlloc (a given allocation: claimalloc.go), Claim.Wait,
// Adopt, Release, Stats and Stop; Status and PrintStatus serve
// `agentkernel-pool status`.
//
// # Objects in Nomad
//
// The template job of pool p on node n is `agentkernel-pool-<p>-<first 8 of
// n>`: batch, parameterized (payload forbidden, meta_optional
// agentkernel_pool_dispatcher), constrained to ${node.unique.id} = n, no
// restarts and no reschedules, with meta agentkernel_pool, _node, _node_name,
// _task, _template (a hash), _size and _max. A warm instance is a dispatched
// child `<template>/dispatch-…`; it inherits the template's meta, so the job
// list (with meta) tells pool, node, task and template version. A claim is
// the Variable `agentkernel-pool/<pool>/claims/<sandbox alloc id>`, created
// with cas=0, holding pool, alloc_id, job_id, task, node_id, owner_*,
// claimed_at, claim_id and reason.
//
// The template hash covers the parsed, overlaid job except size, max and
// what the node fills in (datacenter, node pool, node name): changing those
// re-registers the template without replacing warm instances; any other
// change re-registers it and replaces unclaimed instances (claimed ones are
// never touched). A Manager started before its node is registered (at agent
// boot) registers the template without the node's values, reads the node
// every 5 s until it can, then registers it again under the same hash, so the
// warm instances stay and the next Manager adopts them.
//
// # Inventory
//
// Three blocking queries, never polling: this node's agentkernel-pool- jobs
// (with meta), the live allocations of their children, and the claim
// variables. A child is claimed when one of its allocations has a claim
// record; failed when its job is dead or only stopping allocations are left;
// warm when its allocation runs, its warm task runs, Options.Prepare accepted
// it and its template's readiness check passed (ready.go); preparing while
// only the last is missing; starting otherwise. Writes of this process are overlaid until
// the list that will show them reaches the write's index (dispatches count as
// starting from before the call; purges and claims apply at once), so no
// decision is taken from a list that trails the Manager's own writes.
// Allocations still running after their job was purged count against max.
//
// # Claim
//
// A candidate comes from memory (the oldest warm instance of the current
// template that no other local call is claiming) and the claim is one cas=0
// write; a conflict moves on to the next candidate, and a retried write that
// finds its own record (the same claim_id) succeeds. Only while the
// allocation watch is failing is the allocation read back from Nomad before
// it is handed out. With no warm instance the call counts as a waiter (the
// replenisher dispatches for it at once, within max) and waits for inventory
// changes until its deadline.
//
// With Options.WriteBehind (the driver sets it) a candidate the inventory
// vouches for is handed out at once, reserved in memory, and its record is
// written in the background (record.go); Claim.Wait says how the write ended
// (ErrClaimLost when another claimer's record was there), and Release and
// Stop wait for it. The caller marks the allocation used before relying on
// the claim, reports such an allocation from Prepare as ErrInUse (never
// handed out; retired when no one adopts it within a minute), and calls Adopt
// for a claim it recovers.
//
// An owner task holds one claim at a time. Of several claims of one owner
// task only the newest is in use; the older ones were left by a start that
// never launched. Claim frees those it has read, in the background, as it
// begins and once it has its claim; reconcile frees the rest.
//
// # Replenish, failures and reconcile
//
// Replenish (on every change, and every 10 s) keeps warm + starting at the
// warm target (demand.go) plus the waiting claims while warm + starting +
// claimed + stopping stays within max, purges dead instances, and retires
// stale-template, surplus and stuck (5 minutes) instances. Retiring takes a
// claim first (reason retire), so an instance someone claims meanwhile is
// left alone. An instance that dies unclaimed or gets stuck is a failure of
// its template (failure.go): the next dispatch backs off from 1 s, doubling
// to 5 minutes, jittered, one instance at a time until one turns warm.
//
// Reconcile (at start, then every 30 s; every 5 s while a template is not
// registered) re-reads the jobspec files, checks the templates are
// registered, deletes claims whose sandbox allocation is gone or dead
// (purging its job), purges claimed sandboxes whose owner allocation or task
// is gone or finished, frees superseded claims and removes pools no longer
// configured on this node. Reconcile reads owner allocations in the owner's
// namespace: without read-job there, leaked claims of those owners are
// logged and not cleaned. example/acl.hcl holds every right the package
// needs (TestNomadACL).
//
// # Tests
//
// pool/pooltest is an in-memory stand-in for the endpoints used, with
// blocking queries and fault switches, reused by the driver's tests.
// `go test ./pool/...` runs against it; with NOMAD_BIN set the TestNomad
// tests and BenchmarkClaim run against a real agent. POOL_DEBUG=1 shows the
// Manager's log in benchmarks.
package pool
