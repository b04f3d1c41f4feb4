# e2e: a sandbox job that takes a warm sandbox of pool "burst" only (the
# pool's warm group, no cold slots), held until the job is stopped. It waits,
# blocked, while no warm sandbox is free; the group constraint on
# ${node.unique.id} makes Nomad check the node on its own every time.
job "warm-only" {
  type = "batch"
  group "agent" {
    constraint {
      attribute = "${node.unique.id}"
      operator  = "is_set"
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
        pool = "burst"
      }
      resources {
        cpu    = 20
        memory = 16
        device "agentkernel/sandbox/burst" {}
      }
    }
  }
}
