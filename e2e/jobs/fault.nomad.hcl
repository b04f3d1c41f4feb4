# A sandbox task for the fault tests: restarts quickly when its start fails.
job "JOBNAME" {
  type = "batch"
  group "agent" {
    restart {
      attempts = ATTEMPTS
      interval = "10m"
      delay    = "3s"
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
        args    = ["-c", "SCRIPT"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
