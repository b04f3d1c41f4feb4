# make bench: a sandbox job on the warm exec pool "iso", printing one line. Its
# start is timed from registration to that line in the task's log.
job "bench-pool" {
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
        pool    = "iso"
        command = "/bin/echo"
        args    = ["first line"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
