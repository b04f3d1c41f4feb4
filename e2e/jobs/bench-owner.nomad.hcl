# The owner of the benchmark's claims: StartTask is called by hand there, and a
# claim's owner must be an allocation Nomad knows, or reconcile frees the claim
# as leaked. A raw_exec task named like the benchmarked one, idle until stopped.
job "e2e-bench-owner" {
  type = "batch"
  group "agent" {
    task "agent" {
      driver = "raw_exec"
      config {
        command = "/bin/sleep"
        args    = ["3600"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
