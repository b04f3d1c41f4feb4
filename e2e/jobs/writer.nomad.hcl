# A sandbox task whose command leaves a writer behind: a background shell with
# its cwd in alloc/data creating a file every 50 ms, on and on. A poststop task
# counts the group's alloc/data twice, 2 s apart.
job "e2e-writer" {
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
        args    = ["-c", "cd $NOMAD_ALLOC_DIR/data && (i=0; while :; do i=$((i+1)); : > w$i; sleep 0.05; done) >/dev/null 2>&1 & sleep 1; echo left-a-writer"]
      }
      resources {
        cpu    = 20
        memory = 32
      }
    }
    task "count" {
      driver = "raw_exec"
      lifecycle {
        hook = "poststop"
      }
      config {
        command = "/bin/sh"
        args    = ["-c", "a=$(ls $NOMAD_ALLOC_DIR/data | wc -l); sleep 2; b=$(ls $NOMAD_ALLOC_DIR/data | wc -l); echo files $a $b"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
