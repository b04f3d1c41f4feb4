# A sandbox job for a cluster (README, Cluster): it asks for a sandbox of pool
# "python" as a device, so Nomad's scheduler places it on a node holding a warm
# sandbox of that pool, whichever node that is, and the driver claims the very
# sandbox the scheduler reserved. With none warm anywhere it starts cold on a
# node with room for one, at once. The pool needs `device = true` and the
# device plugin on every client.
job "agent-cluster" {
  type = "batch"
  group "agent" {
    # Check every node on its own: nodes that look alike to Nomad hold
    # different numbers of warm sandboxes.
    constraint {
      attribute = "${node.unique.id}"
      operator  = "is_set"
    }
    # Score every node, not two sampled ones (batch jobs sample two).
    affinity {
      attribute = "${node.unique.id}"
      operator  = "regexp"
      value     = "."
      weight    = 1
    }
    task "agent" {
      driver = "agentkernel-pool"
      config {
        pool    = "python"
        command = "python3"
        args    = ["-c", "print('hello from a warm sandbox')"]
      }
      resources {
        cpu    = 100
        memory = 128
        device "agentkernel/sandbox" {
          # The pool's two groups: its warm sandboxes, and cold slots for
          # sandboxes a node could still start.
          constraint {
            attribute = "${device.attr.pool}"
            value     = "python"
          }
          # A warm sandbox where there is one.
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
