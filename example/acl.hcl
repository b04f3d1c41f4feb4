# Least-privilege ACL policy for the agentkernel-pool plugin's token.
#   nomad namespace apply -description "warm sandboxes of agentkernel-pool" agentkernel-pool
#   nomad acl policy apply -description "agentkernel-pool plugin" agentkernel-pool example/acl.hcl
#   nomad acl token create -name agentkernel-pool -policy agentkernel-pool -type client
# Put the token's secret in the file named by the plugin block's token_file.

# Namespace of the warm jobs (the plugin block's `namespace`), a namespace of
# their own: alloc-exec runs commands in every allocation of a namespace, so the
# plugin's token must hold it only where the warm sandboxes are, and nothing
# anywhere else. Sandbox tasks run in their users' namespaces, where the plugin
# needs no rights at all. Whoever holds read-fs here can read the run files of
# every claimed sandbox (argv, output) with `nomad alloc fs`: grant it to no one
# who may not read every sandbox task's output.
namespace "agentkernel-pool" {
  capabilities = [
    "submit-job",   # register each pool's parameterized warm job; purge used sandboxes
    "dispatch-job", # dispatch warm instances
    "read-job",     # read warm jobs, their allocations, allocation stats and service check results (readiness)
    "list-jobs",    # list dispatched warm instances for inventory and reconcile
    "alloc-exec",   # start the task's command and redirect `nomad alloc exec` into a sandbox
    # "alloc-node-exec", # only for pools on drivers without filesystem isolation (raw_exec)
  ]

  # Claim records: agentkernel-pool/<pool>/claims/<alloc id>, created with cas=0.
  variables {
    path "agentkernel-pool/*" {
      capabilities = ["write", "read", "list", "destroy"]
    }
  }
}

# The plugin asks its local agent for the node id (/v1/agent/self).
agent {
  policy = "read"
}

# The pool reads its own node (datacenter, node pool, name) to complete the
# templates; `agentkernel-pool status` lists the nodes and their attributes.
node {
  policy = "read"
}
