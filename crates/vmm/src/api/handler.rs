//! The control loop's side of the control socket: carries a request out on
//! the running VM and answers it. Runs on the control thread, which owns
//! the VM's state ([`Control`]).

use std::time::Duration;

use virtio::balloon::{BalloonHandle, BalloonInfo, GuestStats};
use vmm_api::{ApiError, BalloonStats, BalloonStatus, ErrorCode, Reply, Request, VmStatus};

use super::ApiCall;
use crate::config::VmConfig;
use crate::state::{Control, StateError, VmState};
use crate::vm::Vm;
use crate::{Exit, Outcome};

/// Serves `call`; returns how this boot ends when the request ends it
/// (`stop` ends the VM, `reset` reboots it). The answer is sent before
/// returning.
pub(crate) fn serve(
    call: ApiCall,
    vm: &Vm,
    ctl: &mut Control,
    config: &VmConfig,
) -> Option<Outcome> {
    let (result, outcome) = handle(&call.request, vm, ctl, config);
    call.answer(result);
    outcome
}

fn handle(
    request: &Request,
    vm: &Vm,
    ctl: &mut Control,
    config: &VmConfig,
) -> (Result<Reply, ApiError>, Option<Outcome>) {
    let done = |r: Result<(), StateError>| r.map(|()| Reply::Done).map_err(state_error);
    let result = match request {
        Request::Version | Request::Counters | Request::NicLink { .. } => Err(ApiError::new(
            ErrorCode::Internal,
            format!("{} is answered by the connection", request.name()),
        )),
        Request::Status => Ok(Reply::Status(status(vm, ctl, config))),
        Request::Pause => {
            let r = ctl.pause(vm);
            if r.is_ok() {
                eprintln!("keel-vmm: paused (control socket)");
            }
            done(r)
        }
        Request::Resume => {
            let r = ctl.resume(vm);
            if r.is_ok() {
                eprintln!("keel-vmm: resumed (control socket)");
            }
            done(r)
        }
        Request::PowerButton => {
            let r = ctl.press_power_button(vm, config);
            if r.is_ok() {
                eprintln!(
                    "keel-vmm: pressed the ACPI power button (control socket); stopping the VM in {}s if the guest does not power off",
                    config.shutdown_timeout.as_secs_f64()
                );
            }
            done(r)
        }
        Request::Stop => {
            ctl.state = VmState::Ended;
            return (Ok(Reply::Done), Some(Outcome::Exit(Exit::Stopped)));
        }
        Request::Reset => {
            // The reset button: whatever the guest is doing (paused,
            // shutting down), it boots again; the next boot starts Running.
            eprintln!("keel-vmm: reset (control socket)");
            return (Ok(Reply::Done), Some(Outcome::Reset));
        }
        Request::BalloonSet { target_bytes } => balloon(vm).and_then(|b| {
            b.set_target(*target_bytes)
                .map(|()| Reply::Done)
                .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.to_string()))
        }),
        Request::BalloonStats => balloon(vm).and_then(balloon_stats),
    };
    (result, None)
}

fn state_error(e: StateError) -> ApiError {
    let code = match e {
        StateError::Invalid { .. } => ErrorCode::InvalidState,
        _ => ErrorCode::Internal,
    };
    ApiError::new(code, e.to_string())
}

fn balloon(vm: &Vm) -> Result<&BalloonHandle, ApiError> {
    vm.balloon().ok_or_else(|| {
        ApiError::new(
            ErrorCode::NoDevice,
            "The VM has no balloon (start keel-vmm with --balloon)",
        )
    })
}

/// The last statistics (and a request for fresh ones).
fn balloon_stats(b: &BalloonHandle) -> Result<Reply, ApiError> {
    if !b.request_stats() {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            "The guest's balloon driver has not enabled statistics (not started yet, or stats=off)",
        ));
    }
    Ok(Reply::BalloonStats(match b.stats() {
        Some((s, age)) => wire_stats(&s, age),
        None => BalloonStats::default(),
    }))
}

pub(crate) fn wire_stats(s: &GuestStats, age: Duration) -> BalloonStats {
    BalloonStats {
        age_ms: Some(age.as_millis().min(u128::from(u64::MAX)) as u64),
        swap_in_bytes: s.swap_in,
        swap_out_bytes: s.swap_out,
        major_faults: s.major_faults,
        minor_faults: s.minor_faults,
        free_bytes: s.free_memory,
        total_bytes: s.total_memory,
        available_bytes: s.available_memory,
        disk_caches_bytes: s.disk_caches,
        hugetlb_allocations: s.hugetlb_allocations,
        hugetlb_failures: s.hugetlb_failures,
    }
}

pub(crate) fn wire_balloon(i: &BalloonInfo) -> BalloonStatus {
    BalloonStatus {
        target_bytes: i.target_bytes,
        actual_bytes: i.actual_bytes,
        driver_ready: i.driver_ready,
        stats: i.stats,
        deflate_on_oom: i.deflate_on_oom,
        free_page_reporting: i.free_page_reporting,
        inflated_pages: i.inflated_pages,
        deflated_pages: i.deflated_pages,
        reported_bytes: i.reported_bytes,
        rejected_pages: i.rejected_pages,
    }
}

pub(crate) fn wire_state(s: VmState) -> vmm_api::VmState {
    match s {
        VmState::Running => vmm_api::VmState::Running,
        VmState::Paused => vmm_api::VmState::Paused,
        VmState::ShuttingDown => vmm_api::VmState::ShuttingDown,
        // Never seen: the loop ends with the VM.
        VmState::Ended => vmm_api::VmState::Unknown,
    }
}

fn status(vm: &Vm, ctl: &Control, config: &VmConfig) -> VmStatus {
    VmStatus {
        state: wire_state(ctl.state),
        vcpus: u32::from(config.cpus),
        memory_bytes: config.memory,
        uptime_ms: ctl.started.elapsed().as_millis().min(u128::from(u64::MAX)) as u64,
        boots: ctl.boots,
        balloon: vm.balloon().map(|b| wire_balloon(&b.info())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms_carry_every_field() {
        let s = GuestStats {
            swap_in: Some(1),
            swap_out: Some(2),
            major_faults: Some(3),
            minor_faults: Some(4),
            free_memory: Some(5),
            total_memory: Some(6),
            available_memory: Some(7),
            disk_caches: Some(8),
            hugetlb_allocations: Some(9),
            hugetlb_failures: Some(10),
        };
        let w = wire_stats(&s, Duration::from_millis(1500));
        assert_eq!(w.age_ms, Some(1500));
        assert_eq!(
            [
                w.swap_in_bytes,
                w.swap_out_bytes,
                w.major_faults,
                w.minor_faults,
                w.free_bytes
            ],
            [Some(1), Some(2), Some(3), Some(4), Some(5)]
        );
        assert_eq!(
            [
                w.total_bytes,
                w.available_bytes,
                w.disk_caches_bytes,
                w.hugetlb_allocations,
                w.hugetlb_failures
            ],
            [Some(6), Some(7), Some(8), Some(9), Some(10)]
        );
        let b = wire_balloon(&BalloonInfo {
            target_bytes: 1,
            actual_bytes: 2,
            rejected_pages: 3,
            ..Default::default()
        });
        assert_eq!(
            (b.target_bytes, b.actual_bytes, b.rejected_pages),
            (1, 2, 3)
        );
        assert_eq!(
            wire_state(VmState::ShuttingDown),
            vmm_api::VmState::ShuttingDown
        );
    }

    #[test]
    fn refused_transitions_are_invalid_state() {
        let e = state_error(StateError::Invalid {
            from: VmState::Running,
            to: VmState::Running,
        });
        assert_eq!(e.code, ErrorCode::InvalidState);
        let e = state_error(StateError::VcpuTimeout(Duration::from_secs(2)));
        assert_eq!(e.code, ErrorCode::Internal);
    }
}
