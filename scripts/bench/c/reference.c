/*
 * reference [-s SIGNO] PID...   The "native limit": proc connector -> pidfd_send_signal.
 * Fork-only filter (plain LISTEN first, acked; then the 8-byte proc_input, kernel 6.6+),
 * 8 MiB receive buffer, one blocking recv per message, one preallocated siginfo, one
 * pidfd_send_signal per registrant per fork; threads skipped. Prints `ready` once
 * subscribed, and `forks= sent= dropped= enobufs=` on SIGTERM (dropped: EAGAIN, a full queue).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }
struct req { struct nlmsghdr nl; struct cn_msg cn; __u32 op, mask; } __attribute__((packed));

static void subscribe(int fd, unsigned tag, size_t oplen) {
  struct req r = { .nl = { .nlmsg_len = (unsigned)(NLMSG_HDRLEN + sizeof(struct cn_msg) + oplen),
                           .nlmsg_type = NLMSG_DONE, .nlmsg_pid = (unsigned)getpid() },
                   .cn = { .id = { CN_IDX_PROC, CN_VAL_PROC }, .ack = tag, .len = (unsigned short)oplen },
                   .op = PROC_CN_MCAST_LISTEN, .mask = PROC_EVENT_FORK };
  if (send(fd, &r, r.nl.nlmsg_len, 0) < 0) { perror("reference: send"); exit(1); }
}

int main(int argc, char **argv) {
  int signo = 34, opt, fds[1024], nfds = 0;
  while ((opt = getopt(argc, argv, "s:")) != -1) signo = atoi(optarg);
  for (int i = optind; i < argc && nfds < 1024; i++)
    if ((fds[nfds++] = (int)syscall(SYS_pidfd_open, atoi(argv[i]), 0)) < 0) { perror("reference: pidfd_open"); return 1; }
  struct sigaction sa = { .sa_handler = on_term }; /* no SA_RESTART: recv returns EINTR */
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_CONNECTOR), size = 8 << 20;
  struct sockaddr_nl sa_nl = { .nl_family = AF_NETLINK, .nl_groups = CN_IDX_PROC }, from;
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa_nl, sizeof sa_nl) < 0) { perror("reference: netlink"); return 1; }
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0) perror("reference: SO_RCVBUFFORCE");
  unsigned tag = (unsigned)getpid() * 2654435761u;
  subscribe(fd, tag, 4); /* plain LISTEN: its ack proves the kernel took it */
  _Alignas(struct nlmsghdr) char buf[65536];
  for (int acked = 0; !acked;) {
    if (recv(fd, buf, sizeof buf, 0) < 0) { if (errno == ENOBUFS) continue; perror("reference: recv ack"); return 1; }
    struct cn_msg *cn = NLMSG_DATA(buf);
    acked = ((struct proc_event *)cn->data)->what == PROC_EVENT_NONE && cn->ack == tag + 1;
  }
  subscribe(fd, tag + 2, 8); /* narrow to forks; this ack is dropped by the filter itself */
  siginfo_t si;
  memset(&si, 0, sizeof si);
  si.si_signo = signo;
  si.si_code = SI_ASYNCIO;
  long forks = 0, sent = 0, dropped = 0, enobufs = 0;
  printf("ready %d\n", (int)getpid());
  fflush(stdout);
  while (!stop) {
    socklen_t fl = sizeof from;
    ssize_t len = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    if (len < 0) { if (errno == ENOBUFS) enobufs++; else if (errno != EINTR) { perror("reference: recv"); return 1; } continue; }
    if (from.nl_pid != 0) continue;
    for (struct nlmsghdr *nl = (struct nlmsghdr *)buf; NLMSG_OK(nl, (size_t)len); nl = NLMSG_NEXT(nl, len)) {
      struct proc_event *ev = (struct proc_event *)((struct cn_msg *)NLMSG_DATA(nl))->data;
      if (ev->what != PROC_EVENT_FORK || ev->event_data.fork.child_pid != ev->event_data.fork.child_tgid) continue;
      forks++;
      si.si_pid = ev->event_data.fork.parent_tgid;
      si.si_value.sival_int = ev->event_data.fork.child_pid;
      for (int i = 0; i < nfds; i++)
        if (syscall(SYS_pidfd_send_signal, fds[i], signo, &si, 0) == 0) sent++;
        else if (errno == EAGAIN) dropped++; /* the receiver's queue is full (ESRCH: it is gone) */
    }
  }
  printf("forks=%ld sent=%ld dropped=%ld enobufs=%ld\n", forks, sent, dropped, enobufs);
  return 0;
}
