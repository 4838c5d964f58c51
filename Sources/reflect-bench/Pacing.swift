import Reactor

// The open loop of a generator thread (`--rate`, `--connect-rate`): the pacer hands each message
// (churn: cycle) to its connection when the `Schedule` says it is due, stamped with that time.

extension Bench {
    /// Open loop: hands every message (churn: cycle) that has fallen due to its connection, then
    /// sleeps until the next one is due.
    func pace() {
        guard hot.pointee.phase == .warmup || hot.pointee.phase == .measuring else { return }
        let t = now()
        let schedule = hot.pointee.schedule
        let due = schedule.due(at: t)
        if settings.scenario == .churn {
            while paced < due, let slot = freeSlots.popLast() { startCycle(slot, at: t, byPacer: true) }
        } else {
            let n = settings.connections
            if due - paced >= n {
                for c in 0..<n { sendDue(c, at: t) }
            } else {
                for m in paced..<due { sendDue(m % n, at: t) }
            }
            paced = due
        }
        let next = schedule.intended(due)
        let wait = max(pacingQuantumNs, next > t ? next - t : 0)
        reactor.schedule(after: .nanoseconds(Int64(wait))) { [unowned self] in self.pace() }
    }

    /// Open loop: the messages of connection `index` that are due at `t` and fit in its
    /// pipeline (`--depth` in flight). Stamps each with its intended time and counts the late
    /// ones (`byPacer`: sent by the pacer, so any lateness is the generator's own); the caller
    /// writes them.
    @inline(__always)
    func takeDue(_ index: Int, at t: UInt64, byPacer: Bool) -> Int {
        let peer = peers + index
        let size = settings.size, n = settings.connections
        let schedule = hot.pointee.schedule
        let sent = peer.pointee.sent / size
        let inFlight = sent - peer.pointee.received / size
        let count = min(Schedule.share(of: schedule.due(at: t), connection: index, of: n) - sent, ring - inFlight)
        guard count > 0 else { return 0 }
        let times = sendTimes + index * ring, actual = actualTimes + index * ring
        hot.pointee.counters.sent &+= count
        for k in sent..<(sent + count) {
            let intended = schedule.intended(message: k, connection: index, of: n)
            times[k % ring] = intended
            actual[k % ring] = t
            if t > intended && t - intended > lateToleranceNs {
                hot.pointee.counters.late &+= 1
                if byPacer { hot.pointee.counters.lateGenerator &+= 1 }
            }
        }
        return count
    }

    /// Open loop, from a timer: sends what is due on connection `index`.
    func sendDue(_ index: Int, at t: UInt64) {
        let peer = peers + index
        guard peer.pointee.open, let id = peer.pointee.id else { return }
        var left = takeDue(index, at: t, byPacer: true) * settings.size
        if left > 0 && peer.pointee.sent == peer.pointee.received { peer.pointee.waitingSince = t }
        while left > 0 {
            let piece = payload.piece(at: peer.pointee.start + peer.pointee.sent, count: left)
            reactor.context.write(to: id, piece)
            peer.pointee.sent += piece.count
            left -= piece.count
        }
    }

    /// Open-loop churn: begins the next cycle of the schedule on `slot`, timed from when it was
    /// due (`byPacer`: as in `takeDue`).
    func startCycle(_ slot: Int, at t: UInt64, byPacer: Bool) {
        let intended = hot.pointee.schedule.intended(paced)
        paced += 1
        hot.pointee.counters.sent += 1
        if t > intended && t - intended > lateToleranceNs {
            hot.pointee.counters.late += 1
            if byPacer { hot.pointee.counters.lateGenerator += 1 }
        }
        connect(slot, start: intended)
    }

    /// Open-loop churn: a slot is free again; it takes the next cycle at once if one is overdue.
    func cycleDone(_ slot: Int) {
        let t = now()
        if paced < hot.pointee.schedule.due(at: t) { startCycle(slot, at: t, byPacer: false) } else { freeSlots.append(slot) }
    }

    /// Open loop, at the end: what was due and never went out.
    func countUnsent(at t: UInt64) {
        let due = hot.pointee.schedule.due(at: t)
        if settings.scenario == .churn {
            hot.pointee.counters.unsent += max(0, due - paced)
            return
        }
        for index in 0..<settings.connections {
            let share = Schedule.share(of: due, connection: index, of: settings.connections)
            hot.pointee.counters.unsent += max(0, share - peers[index].sent / settings.size)
        }
    }
}
