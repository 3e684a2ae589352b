//! A controllable fake OTLP backend on 127.0.0.1 for tests: each request gets the next scripted
//! behaviour (or the default), and every request that arrived is kept for assertions.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

#[derive(Clone)]
pub enum Behaviour {
    /// Answer with this status, headers and body.
    Status(u16, Vec<(&'static str, String)>, Vec<u8>),
    /// Hold the request until the test calls `release()`, then answer 200.
    Hang,
    /// Close the connection without answering, after reading the request.
    Reset,
}

#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status it was answered with (`None`: hung or reset).
    pub status: Option<u16>,
}

pub struct Backend {
    pub addr: SocketAddr,
    script: Arc<Mutex<VecDeque<Behaviour>>>,
    default: Arc<Mutex<Behaviour>>,
    release: Arc<Notify>,
    released: Arc<AtomicU64>,
    /// Requests held right now (hanging, not yet released).
    held: Arc<AtomicU64>,
    pub received: mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

/// What every connection's service shares with the test's handle.
#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<VecDeque<Behaviour>>>,
    default: Arc<Mutex<Behaviour>>,
    release: Arc<Notify>,
    released: Arc<AtomicU64>,
    held: Arc<AtomicU64>,
    tx: mpsc::UnboundedSender<Received>,
}

impl Backend {
    pub async fn start(default: Behaviour) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let default = Arc::new(Mutex::new(default));
        let release = Arc::new(Notify::new());
        let released = Arc::new(AtomicU64::new(0));
        let held = Arc::new(AtomicU64::new(0));
        let (tx, received) = mpsc::unbounded_channel();
        let shared = Shared {
            script: script.clone(),
            default: default.clone(),
            release: release.clone(),
            released: released.clone(),
            held: held.clone(),
            tx,
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let Shared {
                            script: s,
                            default: d,
                            release: r,
                            released: g,
                            held: h,
                            tx,
                        } = shared.clone();
                        async move {
                            // Releases after this point let a hanging request answer.
                            let generation = g.load(Ordering::SeqCst);
                            let path = req.uri().path().to_string();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                                .collect();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes().to_vec())
                                .unwrap_or_default();
                            let behaviour = s
                                .lock()
                                .unwrap()
                                .pop_front()
                                .unwrap_or_else(|| d.lock().unwrap().clone());
                            let status = match &behaviour {
                                Behaviour::Status(code, ..) => Some(*code),
                                Behaviour::Hang | Behaviour::Reset => None,
                            };
                            // Counted before the test can see the request; uncounted when
                            // answered or when the client gives up on it.
                            let _held = matches!(behaviour, Behaviour::Hang).then(|| {
                                h.fetch_add(1, Ordering::SeqCst);
                                Held(h.clone())
                            });
                            let _ = tx.send(Received {
                                path,
                                headers,
                                body,
                                status,
                            });
                            match behaviour {
                                Behaviour::Status(code, hdrs, body) => {
                                    let mut resp = Response::builder().status(code);
                                    for (k, v) in hdrs {
                                        resp = resp.header(k, v);
                                    }
                                    Ok::<_, std::io::Error>(
                                        resp.body(Full::new(Bytes::from(body))).unwrap(),
                                    )
                                }
                                Behaviour::Hang => {
                                    loop {
                                        let notified = r.notified();
                                        tokio::pin!(notified);
                                        notified.as_mut().enable();
                                        if g.load(Ordering::SeqCst) > generation {
                                            break;
                                        }
                                        notified.await;
                                    }
                                    Ok(Response::new(Full::new(Bytes::new())))
                                }
                                Behaviour::Reset => Err(std::io::Error::other("reset")),
                            }
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend {
            addr,
            script,
            default,
            release,
            released,
            held,
            received,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next requests get these behaviours, in order.
    pub fn script(&self, behaviours: impl IntoIterator<Item = Behaviour>) {
        self.script.lock().unwrap().extend(behaviours);
    }

    pub fn set_default(&self, b: Behaviour) {
        *self.default.lock().unwrap() = b;
    }

    /// Requests hanging right now (arrived, not answered yet).
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }

    /// Lets every request that arrived so far and hangs answer.
    pub fn release(&self) {
        self.released.fetch_add(1, Ordering::SeqCst);
        self.release.notify_waiters();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One hanging request, uncounted when dropped.
struct Held(Arc<AtomicU64>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub fn ok() -> Behaviour {
    Behaviour::Status(200, vec![], vec![])
}
