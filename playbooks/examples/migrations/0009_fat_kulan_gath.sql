CREATE TABLE "app_settings" (
	"key" text PRIMARY KEY NOT NULL,
	"value" jsonb NOT NULL,
	"description" text,
	"updated_by" text,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "case_queue_snapshots" (
	"id" serial PRIMARY KEY NOT NULL,
	"snapshot_at" timestamp with time zone DEFAULT now() NOT NULL,
	"assignment_group" text NOT NULL,
	"open_count" integer DEFAULT 0 NOT NULL,
	"unassigned_count" integer DEFAULT 0 NOT NULL,
	"breach_risk_count" integer DEFAULT 0 NOT NULL,
	"oldest_open_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "catalog_redirect_log" (
	"id" serial PRIMARY KEY NOT NULL,
	"case_number" text NOT NULL,
	"original_category" text,
	"catalog_item" text NOT NULL,
	"redirect_url" text,
	"slack_channel_id" text,
	"confidence" real,
	"redirected_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "client_settings" (
	"id" serial PRIMARY KEY NOT NULL,
	"client_id" text NOT NULL,
	"client_name" text NOT NULL,
	"catalog_redirect_enabled" boolean DEFAULT true NOT NULL,
	"auto_classify" boolean DEFAULT true NOT NULL,
	"default_assignment_group" text,
	"custom_prompt" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "client_settings_client_id_unique" UNIQUE("client_id")
);
--> statement-breakpoint
CREATE INDEX "case_queue_snapshots_group_time_idx" ON "case_queue_snapshots" USING btree ("assignment_group","snapshot_at");--> statement-breakpoint
CREATE INDEX "catalog_redirect_log_case_number_idx" ON "catalog_redirect_log" USING btree ("case_number");