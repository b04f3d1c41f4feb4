# Warm sandbox template on Nomad's isolated `exec` driver (chroot, namespaces,
# cgroups). Starting one cold takes seconds (BENCHMARKS.md has the figure); the
# pool pays that ahead of time.
# The pool core overlays only its mechanics: job ID, parameterized batch type,
# a constraint pinning it to the node, meta, and no restarts or reschedules.
job "sandbox-exec" {
  group "sandbox" {
    task "sandbox" {
      driver = "exec"
      config {
        # Stay alive until claimed; the claimed task's command runs beside it.
        command = "/bin/sleep"
        args    = ["infinity"]
      }
      resources {
        cpu    = 100
        memory = 128
      }
    }
  }
}
