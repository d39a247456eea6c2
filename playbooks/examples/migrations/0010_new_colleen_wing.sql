CREATE TABLE "cmdb_reconciliation_results" (
	"id" serial PRIMARY KEY NOT NULL,
	"case_number" text NOT NULL,
	"case_sys_id" text NOT NULL,
	"entity_value" text NOT NULL,
	"entity_type" text NOT NULL,
	"original_entity_value" text NOT NULL,
	"resolved_entity_value" text,
	"reconciliation_status" text NOT NULL,
	"cmdb_sys_id" text,
	"cmdb_name" text,
	"cmdb_class" text,
	"cmdb_url" text,
	"confidence" real,
	"business_context_match" text,
	"child_task_number" text,
	"child_task_sys_id" text,
	"error_message" text,
	"metadata" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE INDEX "cmdb_reconciliation_results_case_number_idx" ON "cmdb_reconciliation_results" USING btree ("case_number");--> statement-breakpoint
CREATE INDEX "cmdb_reconciliation_results_status_idx" ON "cmdb_reconciliation_results" USING btree ("reconciliation_status");--> statement-breakpoint
CREATE INDEX "cmdb_reconciliation_results_entity_value_idx" ON "cmdb_reconciliation_results" USING btree ("entity_value");--> statement-breakpoint
CREATE INDEX "cmdb_reconciliation_results_created_at_idx" ON "cmdb_reconciliation_results" USING btree ("created_at");