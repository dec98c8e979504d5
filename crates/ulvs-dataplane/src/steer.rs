//! Queue selection of a multi-queue TUN by a small eBPF program (`TUNSETSTEERINGEBPF`).
//!
//! Two programs, one per [`Steering`] choice:
//! - [`Steering::Cpu`] ([`CPU_PROGRAM`]): the queue of the CPU the packet was routed into the
//!   TUN on (`smp_processor_id() % queues`), with worker *i* pinned to CPU *i*. The packet is
//!   read by the worker on the CPU that made it, so handing it over costs no cross-CPU wake-up
//!   and its cache lines stay where they are; where a NIC spreads flows over CPUs (RSS), a flow
//!   stays on one CPU and so on one queue. A flow whose sender moves to another CPU moves queue
//!   with it, which may reorder the few packets in flight at that moment.
//! - [`Steering::Flow`] ([`PROGRAM`]): by the packet's flow hash, as below.
//!
//! Without a program the kernel picks a queue for every packet routed into the TUN with its
//! "automq" logic: a symmetric flow hash (a flow dissection of the packet), a lookup in the
//! device's flow table, and, for every packet written back, another hash and an update of that
//! table. ulvsd's workers share one connection table, so a flow only needs to stay on one queue
//! (to keep its packets in order), not on the queue that wrote its last packet. The program
//! below does that for a fraction of the cost: it returns the hash the packet already carries
//! (a socket's transmit hash, a NIC's receive hash), and only for a packet without one mixes its
//! addresses and ports; the kernel takes the result modulo the number of queues. With a program
//! attached the kernel also skips the hash and flow-table update on every write.
//!
//! Loading a socket-filter program needs CAP_BPF (or CAP_SYS_ADMIN) where unprivileged eBPF is
//! off; without it the kernel's own selection stays.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// Destination register in the low nibble, source register in the high one.
    pub regs: u8,
    /// Jump or memory offset.
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

const MOV64_X: u8 = 0xbf;
const XOR64_X: u8 = 0xaf;
const RSH64_K: u8 = 0x77;
const LDX_W: u8 = 0x61;
const JNE_K: u8 = 0x55;
const JEQ_K: u8 = 0x15;
const JA: u8 = 0x05;
const LD_ABS_B: u8 = 0x30;
const LD_ABS_W: u8 = 0x20;
const EXIT: u8 = 0x95;
const CALL: u8 = 0x85;
/// `BPF_FUNC_get_smp_processor_id`.
const BPF_FUNC_GET_SMP_PROCESSOR_ID: i32 = 8;
/// `offsetof(struct __sk_buff, hash)`.
const SKB_HASH: i16 = 68;

/// The steering program. `r1` is the `__sk_buff`; `LD_ABS` reads the packet from its network
/// header (a TUN has no link header) into `r0` and ends the program with 0 if the packet is
/// too short. Returns the packet's hash if it has one; else, for IPv4, source ^ destination ^
/// ports (words at 12, 16, 20); for IPv6, the low words of source and destination ^ ports
/// (words at 20, 36, 40).
pub const PROGRAM: [Insn; 20] = [
    insn(MOV64_X, 6, 1, 0, 0),      // 0: r6 = skb (LD_ABS reads through r6)
    insn(LDX_W, 0, 1, SKB_HASH, 0), // 1: r0 = skb->hash
    insn(JNE_K, 0, 0, 16, 0),       // 2: if r0 != 0 goto 19
    insn(LD_ABS_B, 0, 0, 0, 0),     // 3: r0 = version/IHL byte
    insn(RSH64_K, 0, 0, 0, 4),      // 4: r0 >>= 4 (the version)
    insn(JEQ_K, 0, 0, 7, 6),        // 5: if r0 == 6 goto 13
    insn(LD_ABS_W, 0, 0, 0, 12),    // 6: IPv4 source
    insn(MOV64_X, 7, 0, 0, 0),      // 7: r7 = r0
    insn(LD_ABS_W, 0, 0, 0, 16),    // 8: IPv4 destination
    insn(XOR64_X, 7, 0, 0, 0),      // 9: r7 ^= r0
    insn(LD_ABS_W, 0, 0, 0, 20),    // 10: ports (no IPv4 options) or first payload word
    insn(XOR64_X, 0, 7, 0, 0),      // 11: r0 ^= r7
    insn(JA, 0, 0, 6, 0),           // 12: goto 19
    insn(LD_ABS_W, 0, 0, 0, 20),    // 13: last word of the IPv6 source
    insn(MOV64_X, 7, 0, 0, 0),      // 14: r7 = r0
    insn(LD_ABS_W, 0, 0, 0, 36),    // 15: last word of the IPv6 destination
    insn(XOR64_X, 7, 0, 0, 0),      // 16: r7 ^= r0
    insn(LD_ABS_W, 0, 0, 0, 40),    // 17: ports (no extension header) or its first word
    insn(XOR64_X, 0, 7, 0, 0),      // 18: r0 ^= r7
    insn(EXIT, 0, 0, 0, 0),         // 19: return r0
];

/// The CPU program: `return bpf_get_smp_processor_id()`.
pub const CPU_PROGRAM: [Insn; 2] = [
    insn(CALL, 0, 0, 0, BPF_FUNC_GET_SMP_PROCESSOR_ID),
    insn(EXIT, 0, 0, 0, 0),
];

/// How a multi-queue TUN picks the queue of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steering {
    /// The queue of the CPU the packet was routed on ([`CPU_PROGRAM`]); workers pinned.
    Cpu,
    /// The packet's flow hash ([`PROGRAM`]).
    Flow,
    /// The kernel's own flow table (no program).
    Kernel,
}

impl Steering {
    /// The program of a steering choice (`None` for the kernel's own).
    pub fn program(self) -> Option<&'static [Insn]> {
        match self {
            Steering::Cpu => Some(&CPU_PROGRAM),
            Steering::Flow => Some(&PROGRAM),
            Steering::Kernel => None,
        }
    }
}

/// What [`PROGRAM`] returns for a packet without a hash (for tests and for predicting the
/// queue: the kernel takes it modulo the number of queues). `None` when the program would read
/// past the end of the packet (it then returns 0).
pub fn fallback_hash(pkt: &[u8]) -> Option<u32> {
    let word = |off: usize| -> Option<u32> {
        let b = pkt.get(off..off + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let offsets = if pkt.first()? >> 4 == 6 {
        [20, 36, 40]
    } else {
        [12, 16, 20]
    };
    Some(word(offsets[0])? ^ word(offsets[1])? ^ word(offsets[2])?)
}

/// The head of `union bpf_attr` for `BPF_PROG_LOAD`.
#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;

/// Loads `program` and attaches it to the TUN device `queue_fd` is a queue of.
pub fn attach(queue_fd: RawFd, program: &[Insn]) -> io::Result<()> {
    let license = b"GPL\0";
    let mut prog_name = [0u8; 16];
    prog_name[..9].copy_from_slice(b"ulvs_flow");
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: u32::try_from(program.len()).map_err(|_| io::Error::other("program too long"))?,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
    };
    // SAFETY: `attr` is a valid BPF_PROG_LOAD attribute of the given size; the instructions
    // and the license it points to outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoad,
            std::mem::size_of::<ProgLoad>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("program fd out of range"))?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw: libc::c_int = prog.as_raw_fd();
    // SAFETY: TUNSETSTEERINGEBPF reads an int (the program's descriptor) through the pointer.
    // The device keeps its own reference to the program, so `prog` may close afterwards.
    let rc = unsafe { libc::ioctl(queue_fd, libc::TUNSETSTEERINGEBPF, &raw) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_on_the_instructions_they_name() {
        let target = |at: usize| at as i64 + 1 + i64::from(PROGRAM[at].off);
        assert_eq!(PROGRAM[2].code, JNE_K);
        assert_eq!(target(2), 19);
        assert_eq!((PROGRAM[5].code, PROGRAM[5].imm), (JEQ_K, 6));
        assert_eq!(target(5), 13);
        assert_eq!(PROGRAM[12].code, JA);
        assert_eq!(target(12), 19);
        assert_eq!(PROGRAM[19].code, EXIT);
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        // LD_ABS reads through r6, which must hold the context first.
        assert_eq!((PROGRAM[0].code, PROGRAM[0].regs), (MOV64_X, 0x16));
        assert_eq!(Steering::Kernel.program(), None);
        assert_eq!(Steering::Cpu.program().map(<[Insn]>::len), Some(2));
    }

    #[test]
    fn fallback_hash_mixes_addresses_and_ports() {
        let mut v4 = [0u8; 28];
        v4[0] = 0x45;
        v4[12..16].copy_from_slice(&[198, 18, 0, 2]);
        v4[16..20].copy_from_slice(&[198, 18, 100, 1]);
        v4[20..24].copy_from_slice(&[0x9c, 0x40, 0x00, 0x50]);
        assert_eq!(
            fallback_hash(&v4),
            Some(0xc612_0002 ^ 0xc612_6401 ^ 0x9c40_0050)
        );
        let mut v6 = [0u8; 48];
        v6[0] = 0x60;
        v6[20..24].copy_from_slice(&[0, 0, 0, 2]);
        v6[36..40].copy_from_slice(&[0, 0, 1, 1]);
        v6[40..44].copy_from_slice(&[0x9c, 0x40, 0x00, 0x50]);
        assert_eq!(fallback_hash(&v6), Some(2 ^ 0x101 ^ 0x9c40_0050));
        assert_eq!(fallback_hash(&v4[..22]), None);
        assert_eq!(fallback_hash(&[]), None);
    }
}
