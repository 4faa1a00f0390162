//! One run loop for every controller, in the way of kube-rs's
//! `Controller`: a controller says which informers feed it and how each
//! event maps to keys of its work queue, and gives a reconcile function
//! that returns when to look again; the runtime does the rest. Each turn
//! it takes in every event already waiting (so a reconcile reads caches
//! as fresh as they can be), reconciles one key once every informer has
//! listed, and otherwise sleeps until an event arrives or a delayed key
//! falls due.

use std::{
    fmt::Display,
    future::{Future, poll_fn},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::sync::mpsc::{self, error::TryRecvError};

use super::work_queue::WorkQueue;
use crate::informer::InformerEvent;

/// What the runtime needs of a controller.
pub trait Controller: Send + 'static {
    type Error: Display + Send;

    /// The keys waiting to be reconciled.
    fn queue(&mut self) -> &mut WorkQueue;

    /// One level-triggered pass over the object `key`; `Ok(Some(delay))`
    /// asks to look again after `delay`, an error retries with back-off.
    fn reconcile(
        &mut self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Duration>, Self::Error>> + Send;

    /// How often [`Self::tick`] runs; None for never.
    fn tick_every(&self) -> Option<Duration> {
        None
    }

    /// Work that is due with time rather than with events (e.g. noticing
    /// a silent node).
    fn tick(&mut self) {}
}

/// A controller and the informers that feed it.
pub struct Runtime<C> {
    controller: C,
    inputs: Vec<Box<dyn Input<C>>>,
}

impl<C> std::fmt::Debug for Runtime<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("inputs", &self.inputs.len())
            .finish_non_exhaustive()
    }
}

impl<C: Controller> Runtime<C> {
    pub fn new(controller: C) -> Self {
        Self {
            controller,
            inputs: Vec::new(),
        }
    }

    /// Feeds the controller from `events`: `on_event` updates its caches
    /// and queues the keys an event concerns. Nothing is reconciled until
    /// every informer has delivered its first list.
    pub fn watch<T, F>(mut self, events: mpsc::Receiver<InformerEvent<T>>, on_event: F) -> Self
    where
        T: Send + 'static,
        F: FnMut(&mut C, InformerEvent<T>) + Send + 'static,
    {
        self.inputs.push(Box::new(Feed {
            events,
            on_event,
            listed: false,
        }));
        self
    }

    /// Runs until an informer closes (control is shutting down).
    pub async fn run(self) {
        let Self {
            mut controller,
            mut inputs,
        } = self;
        let tick_every = controller.tick_every();
        let mut next_tick = tick_every.map(|every| Instant::now() + every);
        loop {
            for input in &mut inputs {
                if !input.drain(&mut controller) {
                    return;
                }
            }
            if let (Some(every), Some(at)) = (tick_every, next_tick)
                && Instant::now() >= at
            {
                controller.tick();
                next_tick = Some(Instant::now() + every);
            }
            if inputs.iter().all(|input| input.listed())
                && let Some(key) = controller.queue().pop()
            {
                let outcome = controller.reconcile(&key).await;
                controller.queue().finish(key, outcome);
                continue;
            }
            let mut wake = controller.queue().wake_at();
            if let Some(at) = next_tick {
                wake = wake.min(at);
            }
            let event = poll_fn(|cx| {
                for input in &mut inputs {
                    if let Poll::Ready(open) = input.poll_next(cx, &mut controller) {
                        return Poll::Ready(open);
                    }
                }
                Poll::Pending
            });
            tokio::select! {
                open = event => if !open { return },
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }
}

/// One informer's events, typed, behind the runtime's common interface.
trait Input<C>: Send {
    /// Hands every waiting event to the controller; false once closed.
    fn drain(&mut self, controller: &mut C) -> bool;
    /// Hands the next event over when one comes; Ready(false) once closed.
    fn poll_next(&mut self, cx: &mut Context<'_>, controller: &mut C) -> Poll<bool>;
    /// Whether the first list has been delivered.
    fn listed(&self) -> bool;
}

struct Feed<T, F> {
    events: mpsc::Receiver<InformerEvent<T>>,
    on_event: F,
    listed: bool,
}

impl<T, F> Feed<T, F> {
    fn deliver<C>(&mut self, controller: &mut C, event: InformerEvent<T>)
    where
        F: FnMut(&mut C, InformerEvent<T>),
    {
        if matches!(event, InformerEvent::Listed(_)) {
            self.listed = true;
        }
        (self.on_event)(controller, event);
    }
}

impl<C, T, F> Input<C> for Feed<T, F>
where
    T: Send,
    F: FnMut(&mut C, InformerEvent<T>) + Send,
{
    fn drain(&mut self, controller: &mut C) -> bool {
        loop {
            match self.events.try_recv() {
                Ok(event) => self.deliver(controller, event),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>, controller: &mut C) -> Poll<bool> {
        match self.events.poll_recv(cx) {
            Poll::Ready(Some(event)) => {
                self.deliver(controller, event);
                Poll::Ready(true)
            }
            Poll::Ready(None) => Poll::Ready(false),
            Poll::Pending => Poll::Pending,
        }
    }

    fn listed(&self) -> bool {
        self.listed
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, sync::Arc};

    use tokio::sync::Mutex;

    use super::*;

    /// Records what it reconciles, and the names it knew of then.
    #[derive(Default)]
    struct Recorder {
        queue: WorkQueue,
        names: Vec<String>,
        seen: Arc<Mutex<Vec<(String, usize)>>>,
        again: bool,
    }

    impl Recorder {
        fn on_name(&mut self, event: InformerEvent<String>) {
            match event {
                InformerEvent::Listed(all) => {
                    for name in &all {
                        self.queue.add(name.clone());
                    }
                    self.names = all;
                }
                InformerEvent::Applied(name) => {
                    self.queue.add(name.clone());
                    self.names.push(name);
                }
                InformerEvent::Deleted(name) => self.names.retain(|n| *n != name),
            }
        }
    }

    impl Controller for Recorder {
        type Error = Infallible;

        fn queue(&mut self) -> &mut WorkQueue {
            &mut self.queue
        }

        async fn reconcile(&mut self, key: &str) -> Result<Option<Duration>, Infallible> {
            self.seen
                .lock()
                .await
                .push((key.to_owned(), self.names.len()));
            let again = std::mem::take(&mut self.again);
            Ok(again.then_some(Duration::from_millis(10)))
        }
    }

    #[tokio::test]
    async fn waits_for_every_list_then_reconciles_each_key_once_with_fresh_caches() {
        let (names, names_rx) = mpsc::channel(16);
        let (others, others_rx) = mpsc::channel::<InformerEvent<String>>(16);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder {
            seen: Arc::clone(&seen),
            again: true,
            ..Recorder::default()
        };
        let run = tokio::spawn(
            Runtime::new(recorder)
                .watch(names_rx, Recorder::on_name)
                .watch(others_rx, |_, _| {})
                .run(),
        );
        names
            .send(InformerEvent::Listed(vec!["a".into(), "b".into()]))
            .await
            .unwrap();
        names
            .send(InformerEvent::Applied("a".into()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            seen.lock().await.is_empty(),
            "not before every informer listed"
        );

        others
            .send(InformerEvent::Listed(Vec::new()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let seen_now = seen.lock().await.clone();
        assert_eq!(
            seen_now,
            [("a".into(), 3), ("b".into(), 3), ("a".into(), 3)],
            "a and b once each, with every waiting event taken in; a again when it asked"
        );

        drop(names);
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("the runtime ends when an informer closes")
            .unwrap();
    }
}
