//! Tasks (long operations) and events (what changed).

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use hostd_api::{ErrorBody, Event, Page, Task};
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::{Auth, P, Q};
use crate::{blocking, ApiResult, AppState};

/// The longest page.
pub const MAX_PAGE: u32 = 500;
/// The longest wait for a task.
pub const MAX_WAIT_MS: u64 = 60_000;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Only items older than this id (the previous page's `next`).
    before: Option<u64>,
    /// Items per page, 1–500 (default 50).
    limit: Option<u32>,
}

impl PageQuery {
    pub fn bounds(&self) -> Result<(Option<u64>, u32), ApiError> {
        let limit = self.limit.unwrap_or(50);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ApiError::bad_request(format!(
                "limit {limit} is out of range: expected 1 to {MAX_PAGE}"
            )));
        }
        Ok((self.before, limit))
    }
}

#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", params(PageQuery),
    responses((status = 200, body = Page<Task>)))]
pub async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Q(q): Q<PageQuery>,
) -> ApiResult<Json<Page<Task>>> {
    let (before, limit) = q.bounds()?;
    let host = s.host.clone();
    Ok(Json(
        blocking(move || host.task_list(&caller, before, limit)).await?,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    /// Wait up to this long (max 60000) for the task to finish.
    wait_ms: Option<u64>,
}

/// A task; with `wait_ms`, answers when it finished or the time is up.
#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks",
    params(("id" = u64, Path), TaskQuery),
    responses((status = 200, body = Task), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(id): P<u64>,
    Q(q): Q<TaskQuery>,
) -> ApiResult<Json<Task>> {
    let host = s.host.clone();
    let task = match q.wait_ms {
        Some(ms) => {
            let wait = Duration::from_millis(ms.min(MAX_WAIT_MS));
            blocking(move || host.task_wait(&caller, id, wait)).await?
        }
        None => blocking(move || host.task_get(&caller, id)).await?,
    };
    Ok(Json(task))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    before: Option<u64>,
    limit: Option<u32>,
    /// Only events about this entity (`host`, `vm:NAME`, `user:NAME`).
    target: Option<String>,
}

/// Events, newest first.
#[utoipa::path(get, path = "/api/v1/events", tag = "tasks", params(EventQuery),
    responses((status = 200, body = Page<Event>)))]
pub async fn events(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Q(q): Q<EventQuery>,
) -> ApiResult<Json<Page<Event>>> {
    let (before, limit) = PageQuery {
        before: q.before,
        limit: q.limit,
    }
    .bounds()?;
    let host = s.host.clone();
    let target = q.target;
    Ok(Json(
        blocking(move || host.event_list(&caller, before, limit, target.as_deref())).await?,
    ))
}
