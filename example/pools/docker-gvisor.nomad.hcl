# Production template for untrusted agent code: docker with gVisor (runsc), a
# read-only root filesystem, every capability dropped and no network. The e2e
# suite runs this file (TestDockerPools), on runsc and on runc.
#
# The client needs (Debian: apt-get install docker.io runsc):
#   /etc/docker/daemon.json registering gVisor; this runsc refuses to start a
#   container with networking in the root network namespace, hence --network=none:
#     {"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}}}
#   and Nomad's docker plugin allowing the runtime and, for an image that is
#   only local (no registry), not deleting it when no task uses it:
#     plugin "docker" { config {
#       allow_runtimes = ["runc", "runsc"]
#       gc { image = false }
#     } }
#
# The image must have a POSIX sh (and setsid, id): the driver starts commands
# with it. local/busybox:1 is a static busybox, built without a registry by
# example/local-image.sh; put your agent's image here instead.
job "sandbox-gvisor" {
  group "sandbox" {
    task "sandbox" {
      driver = "docker"
      config {
        image        = "local/busybox:1"
        force_pull   = false
        runtime      = "runsc"
        network_mode = "none"
        # Stay alive until claimed; the claimed task's command runs beside it.
        command         = "/bin/sh"
        args            = ["-c", "while :; do sleep 3600; done"]
        # docker-init as PID 1 reaps what the sandbox's commands leave.
        init            = true
        readonly_rootfs = true
        cap_drop        = ["all"]
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
      # gVisor's own kernel needs memory of its own: under 16 MB runsc is
      # killed (exit 137). Give cold comparison jobs the same resources.
      resources {
        cpu    = 200
        memory = 128
      }
    }
  }
}
