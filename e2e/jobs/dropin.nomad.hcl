# Drop-in: an agent job as it would run under exec, moved to a pool. Dispatched
# per request with a payload and meta; a prestart task clones into alloc/data; the
# agent reads its payload, templates (one from a Nomad Variable through its
# workload identity, one a 0600 secret), an artifact and the clone, all by
# relative path, and leaves results in local/ and alloc/data; a poststop task
# uploads the alloc/data one.
job "e2e-dropin" {
  type = "batch"
  parameterized {
    payload       = "required"
    meta_required = ["issue"]
  }
  group "agent" {
    restart {
      attempts = 0
      mode     = "fail"
    }
    reschedule {
      attempts  = 0
      unlimited = false
    }
    task "clone" {
      driver = "raw_exec"
      lifecycle {
        hook = "prestart"
      }
      config {
        command = "/bin/sh"
        args    = ["-c", "mkdir -p $NOMAD_ALLOC_DIR/data/repo && echo cloned-repo > $NOMAD_ALLOC_DIR/data/repo/README"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
    task "agent" {
      driver = "agentkernel-pool"
      dispatch_payload {
        file = "issue.txt"
      }
      identity {
        file = true
      }
      artifact {
        source      = "ARTIFACT_URL"
        destination = "local/tools"
      }
      template {
        data        = "issue={{ env \"NOMAD_META_issue\" }}\n"
        destination = "local/config.txt"
      }
      template {
        data        = "password=hunter2\n"
        destination = "secrets/db.txt"
        perms       = "600"
      }
      template {
        data        = "{{ with nomadVar \"nomad/jobs/e2e-dropin\" }}{{ .value }}{{ end }}\n"
        destination = "local/var.txt"
      }
      config {
        pool    = "POOL"
        command = "/bin/sh"
        args    = ["-c", "cat local/issue.txt; cat local/config.txt; cat local/var.txt; cat secrets/db.txt; ls -ln secrets/db.txt; test -s secrets/nomad_token && echo token-ok; sh local/tools/tool.sh; cat $NOMAD_ALLOC_DIR/data/repo/README; echo result-in-local > local/result.txt; echo result-in-data > $NOMAD_ALLOC_DIR/data/result.txt"]
      }
      resources {
        cpu    = 20
        memory = 32
      }
    }
    task "upload" {
      driver = "raw_exec"
      lifecycle {
        hook = "poststop"
      }
      config {
        command = "/bin/sh"
        args    = ["-c", "echo uploaded: $(cat $NOMAD_ALLOC_DIR/data/result.txt)"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
