# Production template for untrusted agent code: docker with gVisor (runsc), a
# read-only root filesystem and every capability dropped. Documented here, not
# run in this repository's tests (they have no docker daemon). The client needs
# runsc installed and registered with dockerd, and the docker plugin must allow
# the runtime: plugin "docker" { config { allow_runtimes = ["runc", "runsc"] } }.
job "sandbox-gvisor" {
  group "sandbox" {
    task "sandbox" {
      driver = "docker"
      config {
        image        = "python:3.12-slim"
        runtime      = "runsc"
        command      = "sleep"
        args         = ["infinity"]
        readonly_rootfs = true
        cap_drop     = ["all"]
        # Writable scratch for the agent, inside the sandbox only.
        mount {
          type     = "tmpfs"
          target   = "/tmp"
          readonly = false
          tmpfs_options {
            size = 268435456
          }
        }
      }
      resources {
        cpu    = 500
        memory = 512
      }
    }
  }
}
