# A sandbox task that outlives a plugin restart: it counts its runs in a file so a
# duplicate start shows, prints, waits for a release file, then exits 5.
job "e2e-long" {
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
        args    = ["-c", "echo run >> MARKER.runs; echo before; while [ ! -e MARKER.release ]; do sleep 0.1; done; echo after; exit 5"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
