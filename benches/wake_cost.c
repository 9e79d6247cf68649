/*
 * What one wake-up costs a thread on this machine, in CPU time charged to the thread that
 * wakes: a timer's (the thread sleeps to absolute 1 ms deadlines, as callpipe's media threads
 * did for every slot) and another thread's (a pipe written every 1 ms by a thread on the other
 * core, or on the same one). On a virtual machine the timer's includes the hypervisor's work.
 *
 *   cc -O2 -pthread -o /tmp/wake_cost benches/wake_cost.c && /tmp/wake_cost
 *
 * Prints microseconds of CPU per wake-up, each over 3,000 wake-ups (3 s).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

enum { WAKES = 3000, PERIOD_NS = 1000000 };

static int pipe_fds[2];

static double thread_cpu_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void advance(struct timespec *t) {
    t->tv_nsec += PERIOD_NS;
    if (t->tv_nsec >= 1000000000) {
        t->tv_nsec -= 1000000000;
        t->tv_sec++;
    }
}

static void pin(pthread_t thread, int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(thread, sizeof set, &set);
}

/* A timerfd armed to the next absolute deadline, waited for in epoll. */
static double timer_wakes(void) {
    int timer = timerfd_create(CLOCK_MONOTONIC, 0), epoll = epoll_create1(0);
    struct epoll_event interest = {.events = EPOLLIN}, ready[4];
    epoll_ctl(epoll, EPOLL_CTL_ADD, timer, &interest);
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    double start = thread_cpu_us();
    for (int i = 0; i < WAKES; i++) {
        advance(&t);
        struct itimerspec at = {{0, 0}, t};
        timerfd_settime(timer, TFD_TIMER_ABSTIME, &at, NULL);
        epoll_wait(epoll, ready, 4, -1);
        unsigned long long expiries;
        if (read(timer, &expiries, sizeof expiries) < 0) perror("read");
    }
    close(timer);
    close(epoll);
    return (thread_cpu_us() - start) / WAKES;
}

static void *writer(void *unused) {
    (void)unused;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    for (int i = 0; i < WAKES; i++) {
        advance(&t);
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL);
        char byte = 1;
        if (write(pipe_fds[1], &byte, 1) < 0) perror("write");
    }
    return NULL;
}

/* Blocked in read() on a pipe that a thread pinned to `writer_cpu` writes every 1 ms. */
static double pipe_wakes(int writer_cpu) {
    if (pipe(pipe_fds) < 0) perror("pipe");
    pin(pthread_self(), 0);
    pthread_t other;
    pthread_create(&other, NULL, writer, NULL);
    pin(other, writer_cpu);
    double start = thread_cpu_us();
    for (int i = 0; i < WAKES; i++) {
        char byte;
        if (read(pipe_fds[0], &byte, 1) < 0) perror("read");
    }
    double cost = (thread_cpu_us() - start) / WAKES;
    pthread_join(other, NULL);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    return cost;
}

int main(void) {
    printf("timer (timerfd + epoll, 1 ms absolute deadlines): %5.1f us of CPU per wake-up\n", timer_wakes());
    printf("pipe written from the other core:                  %5.1f us\n", pipe_wakes(1));
    printf("pipe written from the same core:                   %5.1f us\n", pipe_wakes(0));
    return 0;
}
