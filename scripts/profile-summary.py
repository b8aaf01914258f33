#!/usr/bin/env python3
"""Where a server's CPU time goes, from a `perf record -g -p PID` file: the
share of samples by kind of work (TCP/IP, system-call entry, epoll, io_uring,
memory, fanout's own code), then the top symbols. The groups are prefixes of
kernel and user symbols; every sample falls in exactly one.

    perf record -F 999 -g -p $(pidof fanout) -o uring.perf -- sleep 4
    scripts/profile-summary.py uring.perf "uring, echo 10,000 connections"
"""
import re
import subprocess
import sys

GROUPS = [
    ("io_uring", r"^(io_|__io_|io_uring|tctx_|task_work)"),
    ("epoll", r"^(ep_|do_epoll|__x64_sys_epoll|sock_poll|__pollwait|ep_poll)"),
    ("system-call entry and exit", r"^(do_syscall_64|entry_SYSCALL|syscall_exit|__x64_sys_|fdget|fget|fput|__fget|__fdget|ksys_|do_writev|vfs_writev|__sys_recvfrom|__sys_sendto|sock_write_iter|sock_recvmsg|__sys_recvmsg|import_iovec)"),
    ("TCP/IP and the loopback device", r"^(tcp_|__tcp|inet_|__inet|ip_|__ip|ipv4_|dev_|__dev|netif_|__netif|net_rx|__napi|napi_|loopback|skb_|__skb|kfree_skb|consume_skb|sk_|__sk|sock_def|release_sock|lock_sock|bbr_|__alloc_skb|__copy_skb|process_backlog|__netif_receive|validate_xmit|__kfree_skb|raw_v4|nf_|__local_bh|do_softirq|handle_softirqs|_copy_to_iter|_copy_from_iter|__skb_datagram|copy_user|rep_movs|simple_copy|csum_)"),
    ("memory (slab, page allocator)", r"^(kmem_|__kmem|kmalloc|__kmalloc|kfree|___slab|__slab|slab_|__slab_free|alloc_pages|__alloc_pages|get_page_from|free_unref|__free_pages|rmqueue|memcg|__memcg|mod_memcg|obj_cgroup|refill_obj)"),
    ("scheduler, locks, time", r"^(_raw_spin|__raw_callee|queued_spin|native_queued|schedule|__schedule|finish_task_switch|try_to_wake_up|ttwu|enqueue|dequeue|update_|pick_next|read_tsc|ktime_|hrtimer|__wake_up|wake_up|autoremove_wake|default_wake|llist_|irq_|__irq|asm_|sysvec|psi_|rcu_|select_task|set_next)"),
    ("runtime and WebSocket library (tokio, tungstenite, futures)", r"^(tokio::|<tokio|tokio_uring::|<tokio_uring|tungstenite::|<tungstenite|tokio_tungstenite::|<tokio_tungstenite|futures_util::|<futures_util|futures_core::|<futures)"),
    ("fanout (user space)", r"^(fanout::|<fanout|core::|alloc::|bytes::|slab::|mio::|io_uring::|std::|hashbrown|<bytes|<alloc|<core|<std|_rjem|je_|tikv_jemalloc)"),
    ("libc", r"^(__GI_|__libc|__memmove|__memcpy|__memset|malloc|free|cfree|__writev|__read|__recv|epoll_wait|syscall)"),
]


def main(path, title):
    report = subprocess.run(
        ["perf", "report", "-i", path, "--no-children", "--sort", "sym", "--stdio", "-g", "none"],
        capture_output=True, text=True, check=True).stdout
    rows = []
    for line in report.splitlines():
        m = re.match(r"^\s+([0-9.]+)%\s+\[([.k])\]\s+(.*\S)", line)
        if m:
            rows.append((float(m.group(1)), m.group(2), m.group(3)))
    total = sum(share for share, _, _ in rows)
    groups = {name: 0.0 for name, _ in GROUPS}
    other_kernel = other_user = 0.0
    for share, space, symbol in rows:
        for name, pattern in GROUPS:
            if re.match(pattern, symbol):
                groups[name] += share
                break
        else:
            if space == "k":
                other_kernel += share
            else:
                other_user += share
    samples = re.search(r"# Samples: (\S+) of event", report)
    print(f"# {title}")
    print(f"# {path}: {samples.group(1) if samples else '?'} samples, {total:.1f}% of them in named symbols")
    print()
    print("share  kind of work")
    for name, _ in GROUPS:
        print(f"{groups[name]:5.1f}%  {name}")
    print(f"{other_kernel:5.1f}%  other kernel")
    print(f"{other_user:5.1f}%  other user space")
    print()
    print("top symbols")
    for share, space, symbol in rows[:40]:
        print(f"{share:5.2f}%  [{space}] {symbol}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else sys.argv[1])
