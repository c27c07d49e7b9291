//! A real worker: started, its ready line read, killed and gone.

use std::time::Duration;

use snakepit_testkit::procfs::{gone, processes_with, wait_gone};
use snakepit_testkit::{WorkerProcess, WorkerSpec, SHOWCASE};

#[test]
fn a_started_worker_announces_itself_and_is_gone_after_drop() {
    let worker = WorkerProcess::start(SHOWCASE, "tk-1");
    let pid = worker.pid();
    let socket = worker.socket().unwrap().to_path_buf();
    assert_eq!(worker.ready.worker_id, "tk-1");
    assert_eq!(worker.ready.pid, pid);
    assert_eq!(worker.ready.listen, format!("unix:{}", socket.display()));
    assert_eq!(worker.ready.protocol, 1);
    assert!(socket.exists(), "{} missing", socket.display());
    assert!(!gone(pid));
    assert!(processes_with("--worker-id tk-1").contains(&pid));
    drop(worker);
    assert!(
        wait_gone(&[pid], Duration::from_secs(10)),
        "{pid} still runs"
    );
}

#[test]
fn a_restarted_worker_is_a_new_process_at_the_same_socket() {
    let mut worker = WorkerSpec::new(SHOWCASE, "tk-2").quiet().start();
    let (old, socket) = (worker.pid(), worker.socket().unwrap().to_path_buf());
    worker.restart(SHOWCASE);
    assert_ne!(worker.pid(), old);
    assert!(gone(old));
    assert_eq!(worker.ready.listen, format!("unix:{}", socket.display()));
    let pid = worker.pid();
    drop(worker);
    assert!(
        wait_gone(&[pid], Duration::from_secs(10)),
        "{pid} still runs"
    );
}

#[test]
fn a_worker_on_tcp_reports_the_port_it_bound() {
    let worker = WorkerSpec::new(SHOWCASE, "tk-3")
        .listen("127.0.0.1:0")
        .env("SNAKEPIT_TOKEN", "t0ken")
        .quiet()
        .start();
    assert!(worker.socket().is_none());
    let port: u16 = worker
        .ready
        .listen
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(port, 0, "{}", worker.ready.listen);
}
