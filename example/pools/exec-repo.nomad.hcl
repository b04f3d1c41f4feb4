# Warm sandbox template that prepares something real: a git repository cloned and
# checked out at warm-up, so an agent starts on a working tree instead of waiting
# for a clone. The origin here is a bare repository the template makes itself, a
# stand-in for yours (an `artifact` block, or `git clone https://...` where the
# sandbox has the network). The pool hands a sandbox out only once its ready
# command passes (README, "Readiness").
job "sandbox-repo" {
  group "sandbox" {
    task "sandbox" {
      driver = "exec"
      config {
        command = "/bin/sh"
        args = ["-c", <<-EOT
          set -e
          export HOME="$NOMAD_TASK_DIR"
          export GIT_AUTHOR_NAME=pool GIT_AUTHOR_EMAIL=pool@localhost GIT_COMMITTER_NAME=pool GIT_COMMITTER_EMAIL=pool@localhost
          cd "$NOMAD_TASK_DIR"
          git init -q --bare origin.git
          git init -q seed
          echo "print('hello from the prepared repository')" > seed/main.py
          git -C seed add main.py
          git -C seed commit -q -m initial
          git -C seed push -q ../origin.git HEAD:refs/heads/main
          git clone -q --branch main origin.git ../repo
          exec sleep infinity
        EOT
        ]
      }
      meta {
        # Run in the sandbox's task dir, as its user, until it exits 0.
        agentkernel_pool_ready          = "git -C repo rev-parse -q --verify HEAD"
        agentkernel_pool_ready_interval = "500ms"
      }
      resources {
        cpu    = 100
        memory = 128
      }
    }
  }
}
