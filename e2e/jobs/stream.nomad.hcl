# A sandbox task that prints numbered lines on stdout and stderr until a release
# file exists, then its count and exit code 7; it counts its runs in a file so a
# duplicate start shows.
job "JOBNAME" {
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
        args    = ["-c", "echo run >> MARKER.runs; i=0; while [ ! -e MARKER.release ]; do echo \"n $i\"; echo \"e $i\" >&2; i=$((i+1)); sleep 0.01; done; echo \"last $i\"; echo \"last $i\" >&2; exit 7"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
