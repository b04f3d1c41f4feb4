# A sandbox task running a command: output to the task log, exit code to the task.
job "e2e-command" {
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
        pool    = "dev"
        command = "/bin/sh"
        args    = ["-c", "echo out:$GREETING; echo err:$GREETING >&2; exit 3"]
      }
      env {
        GREETING = "hello from the task env"
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
