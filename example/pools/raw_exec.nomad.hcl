# DEVELOPMENT ONLY: a warm "sandbox" on raw_exec is no sandbox at all (it runs as
# the Nomad client's user, on the host). It starts in milliseconds, which makes
# it handy for trying the plugin and for tests. Never use it for untrusted code.
job "sandbox-raw" {
  group "sandbox" {
    task "sandbox" {
      driver = "raw_exec"
      config {
        command = "/bin/sleep"
        args    = ["infinity"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
