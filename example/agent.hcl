# Nomad client config for agentkernel-pool: put the binary in plugin_dir and name
# it in a plugin block (from Nomad 1.9 an unnamed plugin is not loaded). Every
# option, its default and its checks: README, "Plugin block".
plugin_dir = "/opt/nomad/plugins"

plugin "agentkernel-pool" {
  config {
    # address    = "http://127.0.0.1:4646"                # the local agent's HTTP API
    # token_file = "/etc/nomad.d/agentkernel-pool.token" # policy in acl.hcl
    # Where the warm jobs live: a namespace of their own, so the plugin's token
    # (example/acl.hcl) reaches nothing else. Create it before the first start:
    #   nomad namespace apply agentkernel-pool
    namespace = "agentkernel-pool"
    # Prometheus metrics at http://127.0.0.1:9464/metrics; a dashboard and
    # alert rules are in example/monitoring/.
    # metrics_address = "127.0.0.1:9464"

    # Isolated sandboxes on Nomad's exec driver.
    pool "python" {
      jobspec       = "/etc/nomad.d/pools/exec.nomad.hcl"
      size          = 3     # warm allocations kept ready on this node
      max           = 12    # warm + starting + claimed on this node
      claim_timeout = "30s" # how long a start may wait on a pool miss
      max_warm      = 8     # under load keep up to 8 warm, as claim rate and warm-up call for
      scale_down_after = "5m" # back toward size after 5 minutes of lower demand
      # namespaces  = ["agents"] # only tasks of these namespaces may use it
      device        = true  # on more than one node: a device group, so jobs find the warm sandboxes
                            # wherever they are (README, Cluster; needs the block below)
    }

    # Development only: raw_exec is not isolated.
    pool "dev" {
      jobspec = "/etc/nomad.d/pools/raw_exec.nomad.hcl"
      size    = 2
      max     = 8
    }
  }
}

# The device plugin of the pools with device = true: the same binary under a
# second name in plugin_dir (ln -s agentkernel-pool agentkernel-pool-device).
plugin "agentkernel-pool-device" {
  args = ["device"]
  config {
    # address    = "http://127.0.0.1:4646"                # as the driver's: the local agent
    # token_file = "/etc/nomad.d/agentkernel-pool.token" # needs agent read only
  }
}

plugin "raw_exec" {
  config {
    enabled = true # only for the "dev" pool
  }
}
