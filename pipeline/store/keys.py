"""Every Redis key Letterpress uses, built in one place from the project prefix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "letterpress"

    def _key(self, template: str, *args: str) -> str:
        return f"{self.prefix}:" + template.format(*args)

    @property
    def hot_views(self) -> str:
        return self._key("hot:views")

    @property
    def hot_clicks(self) -> str:
        return self._key("hot:clicks")

    @property
    def hot_landmark(self) -> str:
        return self._key("hot:landmark")

    @property
    def work_queue(self) -> str:
        """The Celery queue of send and build tasks (a Redis list)."""
        return f"{self.prefix}.default"

    @property
    def control_queue(self) -> str:
        """The Celery queue of the beat's ticks, which never wait behind the work."""
        return f"{self.prefix}.control"

    def rate(self, account: str) -> str:
        """The send-rate token bucket of one provider account, shared by every worker."""
        return self._key("rate:{0}", account)

    def console_proof(self, token: str) -> str:
        """A proof of an unsaved draft, shown in the console's preview (a few minutes)."""
        return self._key("console:proof:{0}", token)

    def console_proofs_of(self, user_id: int) -> str:
        """The tokens of one user's newest proofs, newest first (a Redis list)."""
        return self._key("console:proofs:{0}", str(user_id))
