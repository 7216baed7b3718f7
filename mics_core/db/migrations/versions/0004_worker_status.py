"""workers.status: "alive", or "gone" once a worker killed outright is noticed

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("status", sa.String(length=10), nullable=False, server_default="alive"))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("status")
