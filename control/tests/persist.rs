//! The running configuration survives restarts (clean and SIGKILL), and a
//! damaged state file stops the process instead of starting empty.

mod common;

use common::{example, shown, Server, TempDir};
use serde_json::json;

#[test]
fn the_configuration_and_its_generation_survive_a_restart() {
    let dir = TempDir::new("persist");
    let mut s = Server::start(dir.path(), &[]);
    assert_eq!(s.req("PUT", "/v1/config", Some(&example())).0, 200);
    assert_eq!(s.req("PUT", "/v1/bundles/to-site-b/tunnels/1/weight", Some(&json!({ "weight": 6 }))).0, 200);
    let before = s.req("GET", "/v1/config", None);
    let state = s.state_file();
    s.kill9();

    let mut s = Server::start(dir.path(), &[]);
    assert_eq!(s.req("GET", "/v1/config", None), before);
    assert_eq!(s.generation(), 2);
    assert_eq!(s.state_file(), state, "loading does not rewrite");
    // The stored document carries the keys.
    let stored: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(stored["generation"], 2);
    assert_eq!(stored["config"]["bundles"][0]["tunnels"][0]["key_out"], example()["bundles"][0]["tunnels"][0]["key_out"]);
    // Generations keep growing after the restart.
    assert_eq!(s.req("DELETE", "/v1/routes/10.2.5.0%2F24", None).1["generation"], 3);
    // A clean stop (SIGTERM) keeps it too, and removes the socket.
    let pid = s.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let st = s.child.wait().unwrap();
    assert!(st.success(), "{st}");
    assert!(!s.socket.exists());
    let s = Server::start(dir.path(), &[]);
    assert_eq!(s.generation(), 3);
    let mut want = shown(&example());
    want["bundles"][0]["tunnels"][1]["weight"] = json!(6);
    want["routes"].as_array_mut().unwrap().remove(1);
    assert_eq!(s.req("GET", "/v1/config", None).1, want);
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(&s.state).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec!["config.json".to_string()]);
}

#[test]
fn a_damaged_state_file_is_refused_at_start() {
    let dir = TempDir::new("damaged");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    for (text, reason) in [
        ("{\"generation\": 3, \"config\": {\"ports\": [", "EOF"),
        ("{\"generation\": 3, \"config\": {\"ports\": []}}", "ports"),
    ] {
        std::fs::write(state.join("config.json"), text).unwrap();
        let out = std::process::Command::new(common::BIN)
            .arg("--socket")
            .arg(dir.path().join("api.sock"))
            .arg("--state-dir")
            .arg(&state)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("config.json") && err.contains(reason), "{err}");
    }
}

#[test]
fn init_config_seeds_an_empty_state_only() {
    let dir = TempDir::new("init");
    let file = dir.path().join("init.json");
    std::fs::write(&file, serde_json::to_string(&example()).unwrap()).unwrap();
    let mut s = Server::start(dir.path(), &["--init-config", file.to_str().unwrap()]);
    assert_eq!(s.generation(), 1);
    assert_eq!(s.req("DELETE", "/v1/routes/10.2.5.0%2F24", None).1["generation"], 2);
    s.kill9();
    // The state wins over the file from now on.
    let s = Server::start(dir.path(), &["--init-config", file.to_str().unwrap()]);
    assert_eq!(s.generation(), 2);
    assert_eq!(s.req("GET", "/v1/routes", None).1.as_array().unwrap().len(), 2);
}
