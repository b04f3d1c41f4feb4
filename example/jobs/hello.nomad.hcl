# A sandbox task that runs one command in a warm sandbox of pool "dev":
# its output is the task's log, its exit code the task's exit code.
job "hello-sandbox" {
  type = "batch"
  meta {
    issue = "42"
  }
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
        args    = ["-c", "echo hello from a warm sandbox for issue ${NOMAD_META_issue}; printf 'secret length: '; printf %s \"$API_TOKEN\" | wc -c"]
      }
      env {
        API_TOKEN = "per-task-secret-value"
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
