# Least-privilege ACL policy for the agentkernel-pool plugin's token.
#   nomad acl policy apply -description "agentkernel-pool plugin" agentkernel-pool example/acl.hcl
#   nomad acl token create -name agentkernel-pool -policy agentkernel-pool -type client
# Put the token's secret in the file named by the plugin block's token_file.

# Namespace of the warm jobs (the plugin block's `namespace`). If sandbox tasks run
# in other namespaces, the plugin needs no rights there: it only reads its own.
namespace "default" {
  capabilities = [
    "submit-job",   # register each pool's parameterized warm job; purge used sandboxes
    "dispatch-job", # dispatch warm instances
    "read-job",     # read warm jobs, their allocations and allocation stats
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

# `agentkernel-pool status` and reconcile read node status.
node {
  policy = "read"
}
