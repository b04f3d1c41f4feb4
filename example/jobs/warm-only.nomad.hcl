# Place only on nodes that have a warm sandbox ready in pool "python" right now,
# using the node attributes the driver publishes (updated on change).
job "warm-only" {
  type = "batch"
  group "agent" {
    constraint {
      attribute = "${attr.driver.agentkernel-pool.pool.python.warm}"
      operator  = ">="
      value     = "1"
    }
    task "agent" {
      driver = "agentkernel-pool"
      config {
        pool    = "python"
        command = "python3"
        args    = ["-c", "print('warm start')"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
