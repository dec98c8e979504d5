# Example desired state for ulvs-agent (checked by the agent's unit tests).
#   ulvs-agent -c /etc/ulvs/agent.hcl validate
#   ulvs-agent -c /etc/ulvs/agent.hcl plan
#   ulvs-agent -c /etc/ulvs/agent.hcl apply
#   ulvs-agent -c /etc/ulvs/agent.hcl watch     # what the systemd unit runs

agent {
  # The owner label's value: only services labelled ulvs.io/owner = "edge-1" are managed.
  name               = "edge-1"
  owner_label        = "ulvs.io/owner"
  reconcile_interval = "10s"
}

variable "vip" {
  description = "The virtual IP (override with --var vip=...)"
  default     = "198.18.100.1"
}

locals {
  web_port = 8080
  backends = ["198.18.1.11", "198.18.1.12"]
}

timeouts {
  tcp     = 900
  tcp_fin = 120
  udp     = 300
}

service "web" {
  protocol  = "tcp"
  address   = var.vip
  port      = 80
  scheduler = "wrr"
  forward   = "masq" # default forwarding method of its real servers
  quorum    = 1
  labels    = { team = "web" }

  health_check {
    type          = "http"
    path          = "/healthz"
    expect_status = 200
    interval      = "2s"
    timeout       = "1s"
    rise          = 2
    fall          = 3
  }

  real_server "web1" {
    address = local.backends[0]
    port    = local.web_port
    weight  = 2
  }

  real_server "web2" {
    address         = local.backends[1]
    port            = local.web_port
    weight          = 1
    upper_threshold = 1000
    lower_threshold = 800
  }

  # Added only while no real server is healthy.
  sorry_server {
    address = "198.18.1.99"
    port    = 8080
  }
}

service "dns" {
  protocol  = "udp"
  address   = var.vip
  port      = 53
  scheduler = "sh"
  scheduler_flags = ["sh-port"]
  forward   = "masq"

  health_check {
    type     = "udp"
    send     = "ping"
    interval = "5s"
    timeout  = "1s"
  }

  real_server {
    address = "198.18.1.11"
    port    = 5353
  }
  real_server {
    address = "198.18.1.12"
    port    = 5353
  }
}

service "tunnelled" {
  protocol = "tcp"
  address  = "198.18.100.2"
  port     = 443
  persistence {
    timeout    = 300
    prefix_len = 24
  }

  # HTTPS: a GET over TLS (rustls) with the expected status. The server's certificate must
  # chain to ca_file (PEM, relative to this file; the system CA bundle if unset) and be valid
  # for server_name (also sent as SNI; the real server's IP address if unset). The timeout
  # bounds connect + handshake + answer.
  #   insecure_skip_verify = true   accepts ANY certificate (self-signed, expired, another
  #                                 name): the check then cannot tell the real server from an
  #                                 impostor. Only for test setups; excludes ca_file.
  health_check {
    type          = "https"
    path          = "/healthz"
    expect_status = 200
    host          = "www.example.com" # Host header (default: address:port)
    server_name   = "www.example.com"
    # ca_file     = "internal-ca.pem"
    interval      = "5s"
    timeout       = "2s"
  }

  real_server "dc2" {
    address = "198.18.2.21"
    forward = "tunnel"
    tunnel {
      type     = "gue"
      port     = 6080
      checksum = "remcsum"
    }
  }
}
