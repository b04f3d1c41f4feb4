# A template rendered again while the command runs (change_mode = "signal"): the
# command reads it when the signal arrives.
job "e2e-live" {
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
      template {
        data          = "{{ with nomadVar \"nomad/jobs/e2e-live\" }}{{ .value }}{{ end }}\n"
        destination   = "local/live.txt"
        change_mode   = "signal"
        change_signal = "SIGUSR1"
      }
      config {
        pool    = "POOL"
        command = "/bin/sh"
        args    = ["-c", "trap 'echo got: $(cat local/live.txt); exit 0' USR1; echo start: $(cat local/live.txt); while :; do sleep 0.2; done"]
      }
      resources {
        cpu    = 20
        memory = 32
      }
    }
  }
}
