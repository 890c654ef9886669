use super::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn loopback_endpoints() {
    for (ep, want) in [
        ("tcp://127.0.0.1:5601", true),
        ("tcp://127.3.2.1:5601", true),
        ("tcp://[::1]:5601", true),
        ("tcp://localhost:5601", true),
        ("ipc:///run/tapflow/p1", true),
        ("inproc://x", true),
        ("tcp://127.0.0.1:0;127.0.0.1:5601", true),
        ("tcp://10.0.0.5:5601", false),
        ("tcp://0.0.0.0:5601", false),
        ("tcp://*:5601", false),
        ("tcp://[::]:5601", false),
        ("tcp://eth0:5601", false),
        ("tcp://127.0.0.1:0;10.0.0.5:5601", false),
        ("tcp://127.0.0.1.example.com:5601", false),
        ("udp://127.0.0.1:5601", false),
    ] {
        assert_eq!(is_loopback_endpoint(ep), want, "{ep}");
    }
}

fn errors(role: Role, s: &SecuritySettings, endpoints: &[&str]) -> Vec<String> {
    let mut errors = Vec::new();
    let _ = resolve(role, s, endpoints, &mut errors);
    errors
}

#[test]
fn keys_round_trip_and_bad_files_are_refused() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let prefix = dir.path().join("proc");
    let (key, public, pair) = keygen("t", &prefix).expect("generate a key pair");
    let mode = std::fs::metadata(&key)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    assert_eq!(mode, 0o600);
    assert!(keygen("t", &prefix)
        .expect_err("an existing key pair")
        .to_string()
        .contains("exists: not overwritten"));
    let loaded = load_keypair(&key).expect("load the key pair");
    assert_eq!(loaded.public, pair.public);
    assert_eq!(loaded.secret.bytes(), pair.secret.bytes());
    assert!(
        !format!("{loaded:?}").contains(&zmq::z85_encode(pair.secret.bytes()).unwrap_or_default())
    );
    assert_eq!(
        load_public_key(&public).expect("reading the public key"),
        pair.public
    );
    // A clients file is concatenated .pub files.
    let (_, other_pub, other) = keygen("t", &dir.path().join("b")).expect("generate a key pair");
    let clients = dir.path().join("clients");
    let text = format!(
        "{}\n{}",
        std::fs::read_to_string(&public).unwrap_or_default(),
        std::fs::read_to_string(&other_pub).unwrap_or_default()
    );
    std::fs::write(&clients, text).expect("write the clients file");
    let keys: Vec<PublicKey> = load_clients(&clients)
        .expect("reading the clients file")
        .into_iter()
        .map(|c| c.key)
        .collect();
    assert_eq!(keys, vec![pair.public, other.public]);

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640))
        .expect("set the file mode");
    let e = load_keypair(&key).expect_err("a bad key file").to_string();
    assert!(e.contains("mode 0640") && e.contains("chmod 600"), "{e}");
    let e = load_keypair(&public)
        .expect_err("a bad key file")
        .to_string();
    assert!(e.contains("not a keypair file"), "{e}");
    let e = load_public_key(&dir.path().join("none"))
        .expect_err("a missing key file")
        .to_string();
    assert!(e.starts_with("curve_server_key "), "{e}");
    std::fs::write(&clients, "public = \"short\"\n").expect("write the clients file");
    let e = load_clients(&clients)
        .expect_err("a bad key file")
        .to_string();
    assert!(e.contains("line 1") && e.contains("40 characters"), "{e}");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .expect("set the file mode");
    let both = Role {
        server: true,
        client: true,
    };
    let s = SecuritySettings {
        plain: false,
        key: Some(key.clone()),
        clients: Some(other_pub.clone()),
        server_key: Some(public.clone()),
    };
    let mut errs = Vec::new();
    let sec = resolve(both, &s, &["tcp://10.0.0.5:1"], &mut errs);
    assert!(errs.is_empty(), "{errs:?}");
    let text = sec.resolved();
    assert!(
        text.contains(&format!("curve_key = \"{}\"", key.display())),
        "{text}"
    );
    assert!(!text.contains(&zmq::z85_encode(pair.secret.bytes()).unwrap_or_default()));
    let s = SecuritySettings { plain: true, ..s };
    let errs = errors(both, &s, &["tcp://127.0.0.1:1"]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("both given"), "{errs:?}");
}

#[test]
fn plain_only_on_loopback_and_keys_required_otherwise() {
    let client = Role {
        server: false,
        client: true,
    };
    let plain = SecuritySettings {
        plain: true,
        ..SecuritySettings::default()
    };
    assert!(errors(client, &plain, &["tcp://127.0.0.1:5601", "ipc:///x"]).is_empty());
    let e = errors(
        client,
        &plain,
        &["tcp://127.0.0.1:5601", "tcp://10.0.0.5:5602"],
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("tcp://10.0.0.5:5602") && !e[0].contains("5601"),
        "{e:?}"
    );
    let e = errors(client, &SecuritySettings::default(), &["tcp://127.0.0.1:1"]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("links are encrypted: give --curve-key FILE and --curve-server-key FILE"),
        "{e:?}"
    );
    let only_key = SecuritySettings {
        key: Some("/nonexistent.key".into()),
        ..SecuritySettings::default()
    };
    let e = errors(client, &only_key, &["tcp://10.0.0.5:1"]);
    assert!(e[0].contains("given: --curve-key"), "{e:?}");
}

/// A clients file holding `lines` ({A} and {B} replaced by two keys): the clients, or the error.
fn clients_of(lines: &str) -> (Result<Vec<Client>, String>, PublicKey, PublicKey) {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let (a, b) = (
        KeyPair::generate().expect("generate a key pair").public,
        KeyPair::generate().expect("generate a key pair").public,
    );
    let path = dir.path().join("clients");
    let text = lines.replace("{A}", &a.z85()).replace("{B}", &b.z85());
    std::fs::write(&path, text).expect("write the clients file");
    (load_clients(&path).map_err(|e| e.to_string()), a, b)
}

#[test]
fn clients_file_binds_keys_to_names() {
    let (got, a, b) = clients_of(
        "# taps\npublic = \"{A}\", names = [\"tap-b\", \"tap-a\"]  # two taps, one key\n\n\
         public = \"{B}\" # a .pub line as keygen writes it, any name\n\
         public = \"{A}\", names = ['tap-c', \"tap-a\"]\n",
    );
    let got = got.expect("a valid clients file");
    let names = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        got,
        vec![
            Client {
                key: a,
                names: names(&["tap-a", "tap-b", "tap-c"])
            },
            Client {
                key: b,
                names: None
            },
        ]
    );
    // Bad lines are reported with their number and what is wrong.
    for (text, want) in [
        (
            "public = \"{A}\"\npublic = \"{B}\", names = []\n",
            "line 2: `names` is empty",
        ),
        (
            "public = \"{A}\", names = [\"\"]\n",
            "line 1: `names` holds an empty name",
        ),
        (
            "public = \"{A}\" names = [\"x\"]\n",
            "line 1: not a line `public = \"Z85\"`",
        ),
        ("public = \"{A}\", name = [\"x\"]\n", "line 1: not a line"),
        ("public = \"{A}\", names = \"x\"\n", "line 1: not a line"),
        (
            "public = \"short\", names = [\"x\"]\n",
            "line 1: is not a key",
        ),
        (
            "public = \"{A}\", names = [\"x\"]\n\npublic = \"{A}\"\n",
            "line 3: this key is also on line 1, once with `names` and once without",
        ),
        ("# nothing\n", "lists no key"),
    ] {
        let (got, _, _) = clients_of(text);
        let e = got.expect_err("a bad clients file");
        assert!(e.contains(want), "{text:?}: want {want:?} in {e}");
    }
}

#[test]
fn bindings_allow_only_the_names_of_the_sending_key() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let (key, _, pair) = keygen("t", &dir.path().join("server")).expect("generate a key pair");
    let (a, b) = (
        KeyPair::generate().expect("generate a key pair").public,
        KeyPair::generate().expect("generate a key pair").public,
    );
    let clients = dir.path().join("clients");
    std::fs::write(
        &clients,
        format!(
            "public = \"{}\", names = [\"tap-a\"]\npublic = \"{}\"\n",
            a.z85(),
            b.z85()
        ),
    )
    .expect("write the clients file");
    let server = Role {
        server: true,
        client: false,
    };
    let s = SecuritySettings {
        key: Some(key),
        clients: Some(clients),
        ..SecuritySettings::default()
    };
    let mut errs = Vec::new();
    let security = resolve(server, &s, &["tcp://10.0.0.5:1"], &mut errs);
    assert!(errs.is_empty(), "{errs:?}");
    assert!(security
        .resolved()
        .contains("# curve_clients: 2 client keys, 1 bound to names"));
    let bindings = NameBindings::of(&security);
    assert_eq!(bindings.unbound(), (1, 2));
    let (a, b) = (a.z85(), b.z85());
    assert!(bindings.allows(Some(&a), "tap-a"));
    assert_eq!(bindings.speaker(Some(&a), "tap-a"), Speaker::Bound);
    assert_eq!(bindings.speaker(Some(&b), "tap-a"), Speaker::Any);
    assert!(!bindings.allows(Some(&a), "some-other-tap"));
    assert!(bindings.allows(Some(&b), "some-other-tap"));
    // A message without a user id, or another key's, under CURVE: refused.
    assert!(!bindings.allows(None, "tap-a"));
    assert!(!bindings.allows(Some(&pair.public.z85()), "tap-a"));
    // Plain links bind nothing.
    assert!(NameBindings::of(&LinkSecurity::Plain).allows(None, "anything"));
}
