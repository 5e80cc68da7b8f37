//! The container's network, planned: which `--network` type is asked for (`none`, a
//! loopback-only namespace, or `pasta`, the host's network through the unprivileged
//! `pasta` helper), Apptainer's `--network-args` (`portmap=HOST:CONTAINER/PROTO`) and the
//! pasta command line that carries them out. Pure: no system calls (`pasta` starts it).

use std::path::PathBuf;

use super::plan::PastaPlan;

/// Where the container's resolv.conf sends DNS queries with `--network pasta`: pasta
/// answers UDP port 53 of this address by forwarding the query to the host's first
/// resolver (`--dns-forward`), so a host resolver on its loopback (systemd-resolved's
/// 127.0.0.53) works too. A link-local address, routed through pasta's interface like any
/// address outside the container.
pub const DNS_FORWARD: &str = "169.254.1.1";

/// The network types sifr offers, for messages.
pub const AVAILABLE: &str = "none, pasta";

/// A `--network` type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkType {
    /// A network namespace with the loopback interface only.
    None,
    /// The host's network through pasta (passt's namespace mode).
    Pasta,
}

/// A port forwarded from the host into the container (`portmap=HOST:CONTAINER/PROTO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMap {
    pub host: u16,
    pub container: u16,
    pub proto: Proto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// Why the network request cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("--network {0}: unknown network type; available without privileges: {AVAILABLE}")]
    Unknown(String),
    #[error("--network {0}: sifr sets up one network type at a time (one of: {AVAILABLE})")]
    Several(String),
    #[error(
        "--network pasta needs the pasta program (package passt), not found in sifr.conf's binary path ({0}); install passt or use --network none"
    )]
    PastaMissing(String),
    #[error(
        "--network-args {0}: network arguments need --net --network pasta (with --network none there is nothing to configure)"
    )]
    ArgsWithoutPasta(String),
    #[error("--network-args {arg}: {why}")]
    BadArg { arg: String, why: String },
}

/// The `--network` value as given (comma-separated types, as Apptainer takes them).
pub fn parse_type(name: &str) -> Result<NetworkType, NetworkError> {
    let types: Vec<&str> = name
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    match types.as_slice() {
        ["none"] => Ok(NetworkType::None),
        ["pasta"] => Ok(NetworkType::Pasta),
        [one] => Err(NetworkError::Unknown((*one).to_string())),
        [] => Err(NetworkError::Unknown(name.to_string())),
        many => match many.iter().find(|t| !matches!(**t, "none" | "pasta")) {
            Some(bad) => Err(NetworkError::Unknown((*bad).to_string())),
            None => Err(NetworkError::Several(name.to_string())),
        },
    }
}

/// Parses `--network-args` values with Apptainer's syntax, `[NETWORK:]KEY=VALUE[;KEY=VALUE]`,
/// for the `pasta` network: only `portmap=HOST[:CONTAINER]/tcp|udp` is meaningful there.
pub fn parse_args(args: &[String]) -> Result<Vec<PortMap>, NetworkError> {
    let mut ports = Vec::new();
    for arg in args {
        let bad = |why: String| NetworkError::BadArg {
            arg: arg.clone(),
            why,
        };
        // A `NETWORK:` prefix is a colon before the first `=` (Apptainer's SetArgs).
        let body = match (arg.find(':'), arg.find('=')) {
            (Some(c), eq) if eq.is_none_or(|e| c < e) => {
                let net = &arg[..c];
                if net != "pasta" {
                    return Err(bad(format!(
                        "network {net} wasn't specified in --network option"
                    )));
                }
                &arg[c + 1..]
            }
            _ => arg.as_str(),
        };
        for pair in body.split(';') {
            let kv: Vec<&str> = pair.split('=').collect();
            let [key, value] = kv.as_slice() else {
                return Err(bad(format!("invalid argument: {pair}")));
            };
            match *key {
                "portmap" => ports.push(parse_portmap(value).map_err(bad)?),
                other => {
                    return Err(bad(format!(
                        "'{other}' is a CNI plugin argument; the pasta network takes only \
                         portmap=HOST:CONTAINER/PROTO"
                    )));
                }
            }
        }
    }
    Ok(ports)
}

/// `HOST[:CONTAINER]/tcp|udp`, as Apptainer's portmap argument.
fn parse_portmap(value: &str) -> Result<PortMap, String> {
    let form = || {
        format!(
            "badly formatted portmap argument '{value}', must be of form \
             portmap=hostPort:containerPort/protocol"
        )
    };
    let (ports, proto) = value.split_once('/').ok_or_else(form)?;
    let proto = match proto {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => return Err("only tcp and udp protocol can be specified".into()),
    };
    let port = |s: &str, what: &str| match s.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        Ok(_) => Err(format!(
            "{what} port must be greater than 0 and less than 65535"
        )),
        Err(e) => Err(format!("can't convert {what} port '{s}': {e}")),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (host, container) = match parts.as_slice() {
        [h] => {
            let h = port(h, "host")?;
            (h, h)
        }
        [h, c] => (port(h, "host")?, port(c, "container")?),
        _ => return Err("portmap port argument is badly formatted".into()),
    };
    Ok(PortMap {
        host,
        container,
        proto,
    })
}

/// pasta's command line for the container's namespace, without the pid file and the
/// target (the launch adds `--pid FILE PID`): in the foreground (a child sifr stops), the
/// interface configured in the namespace (`--config-net`), only the asked ports forwarded
/// from the host (`-t`/`-u`, none by default: pasta would otherwise forward every port
/// the container listens on), no port of the host's loopback forwarded into the
/// container's loopback (`-T`/`-U none`), and DNS answered at [`DNS_FORWARD`] when sifr
/// writes resolv.conf (`dns_forward`).
pub fn pasta_plan(binary: PathBuf, ports: &[PortMap], dns_forward: bool) -> PastaPlan {
    let spec = |proto: Proto| {
        let list: Vec<String> = ports
            .iter()
            .filter(|p| p.proto == proto)
            .map(|p| format!("{}:{}", p.host, p.container))
            .collect();
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(",")
        }
    };
    let mut args: Vec<String> = [
        "--foreground",
        "--quiet",
        "--config-net",
        "--tcp-ports",
        &spec(Proto::Tcp),
        "--udp-ports",
        &spec(Proto::Udp),
        "--tcp-ns",
        "none",
        "--udp-ns",
        "none",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if dns_forward {
        args.extend(["--dns-forward".to_string(), DNS_FORWARD.to_string()]);
    }
    PastaPlan { binary, args }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn test_network_types() {
        assert_eq!(parse_type("none"), Ok(NetworkType::None));
        assert_eq!(parse_type("pasta"), Ok(NetworkType::Pasta));
        assert_eq!(parse_type(" pasta ,"), Ok(NetworkType::Pasta));
        assert_eq!(
            parse_type("bridge"),
            Err(NetworkError::Unknown("bridge".into()))
        );
        assert_eq!(
            parse_type("pasta,bridge"),
            Err(NetworkError::Unknown("bridge".into()))
        );
        assert_eq!(
            parse_type("none,pasta"),
            Err(NetworkError::Several("none,pasta".into()))
        );
        let msg = NetworkError::Unknown("bridge".into()).to_string();
        assert!(msg.contains("none, pasta"), "{msg}");
    }

    #[test]
    fn test_portmaps_in_apptainers_syntax() {
        let p = parse_args(&args(&[
            "portmap=8080:80/tcp",
            "pasta:portmap=53/udp;portmap=2222:22/tcp",
        ]))
        .expect("parses");
        assert_eq!(
            p,
            vec![
                PortMap {
                    host: 8080,
                    container: 80,
                    proto: Proto::Tcp
                },
                PortMap {
                    host: 53,
                    container: 53,
                    proto: Proto::Udp
                },
                PortMap {
                    host: 2222,
                    container: 22,
                    proto: Proto::Tcp
                },
            ]
        );
    }

    #[test]
    fn test_bad_network_args_name_the_arg() {
        for (arg, needle) in [
            (
                "portmap=8080:80",
                "badly formatted portmap argument '8080:80'",
            ),
            ("portmap=8080:80/sctp", "only tcp and udp"),
            ("portmap=0:80/tcp", "host port must be greater than 0"),
            ("portmap=8080:70000/tcp", "container port must be"),
            ("portmap=x:80/tcp", "can't convert host port 'x'"),
            (
                "portmap=1:2:3/tcp",
                "portmap port argument is badly formatted",
            ),
            ("IP=10.0.0.2", "'IP' is a CNI plugin argument"),
            ("bridge:portmap=80/tcp", "network bridge wasn't specified"),
            ("portmap", "invalid argument: portmap"),
        ] {
            let e = parse_args(&args(&[arg])).expect_err(arg).to_string();
            assert!(e.starts_with(&format!("--network-args {arg}: ")), "{e}");
            assert!(e.contains(needle), "{arg}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn test_pasta_command_line() {
        let p = pasta_plan("/usr/bin/pasta".into(), &[], true);
        assert_eq!(p.binary, PathBuf::from("/usr/bin/pasta"));
        assert_eq!(
            p.args.join(" "),
            "--foreground --quiet --config-net --tcp-ports none --udp-ports none \
             --tcp-ns none --udp-ns none --dns-forward 169.254.1.1"
        );
        let ports = parse_args(&args(&[
            "portmap=8080:80/tcp;portmap=9000/tcp;portmap=53/udp",
        ]))
        .expect("parses");
        let p = pasta_plan("/p".into(), &ports, false);
        let line = p.args.join(" ");
        assert!(
            line.contains("--tcp-ports 8080:80,9000:9000 --udp-ports 53:53"),
            "{line}"
        );
        assert!(!line.contains("--dns-forward"), "{line}");
    }
}
