# e2e cluster bursts: one of B sandbox jobs registered at once on a 3-node
# cluster whose pool "burst" is a device group (README, Cluster). The first
# line names the sandbox's alloc dir and the instance the scheduler reserved,
# so a sandbox handed out twice, or another than the reserved one, shows in
# the output as well as in the task events; the sleep keeps it claimed while
# the others start.
job "cluster-burst" {
  type = "batch"
  group "agent" {
    # Every node is checked on its own: warm counts differ between nodes
    # that Nomad would otherwise take for one class.
    constraint {
      attribute = "${node.unique.id}"
      operator  = "is_set"
    }
    # Score every node, not the two a batch job samples.
    affinity {
      attribute = "${node.unique.id}"
      operator  = "regexp"
      value     = "."
      weight    = 1
    }
    restart {
      attempts = 0
      mode     = "fail"
    }
    reschedule {
      attempts  = 0
      unlimited = false
    }
    task "agent" {
      driver = "agentkernel-pool"
      config {
        pool    = "burst"
        command = "/bin/sh"
        args    = ["-c", "echo sandbox $AGENTKERNEL_SANDBOX_ALLOC_DIR reserved $AGENTKERNEL_POOL_SANDBOX; sleep 5"]
      }
      resources {
        cpu    = 20
        memory = 16
        device "agentkernel/sandbox" {
          constraint {
            attribute = "${device.attr.pool}"
            value     = "burst"
          }
          affinity {
            attribute = "${device.attr.warm}"
            value     = "true"
            weight    = 100
          }
        }
      }
    }
  }
}
