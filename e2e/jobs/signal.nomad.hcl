# A sandbox task that reports the kill signal it receives.
job "e2e-signal" {
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
      driver       = "agentkernel-pool"
      kill_signal  = "SIGUSR1"
      kill_timeout = "10s"
      config {
        pool    = "dev"
        command = "/bin/sh"
        args    = ["-c", "trap 'echo got USR1; exit 7' USR1; echo ready; while :; do sleep 0.1; done"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
