# An idle sandbox driven by nomad alloc exec.
job "e2e-idle" {
  type = "batch"
  group "agent" {
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
        pool = "dev"
      }
      env {
        SECRET = "per-task-secret"
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
