# An idle sandbox: the task holds a claimed warm sandbox until stopped. Agents
# drive it with `nomad alloc exec -task agent <alloc id> <command>`, which the
# driver redirects into the sandbox with the task's env.
job "idle-sandbox" {
  type = "service"
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
        WORKSPACE = "/tmp"
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
