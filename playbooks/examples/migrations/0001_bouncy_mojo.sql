CREATE TABLE "case_threads" (
	"id" serial PRIMARY KEY NOT NULL,
	"channel_id" text NOT NULL,
	"thread_ts" text NOT NULL,
	"case_number" text,
	"opened_by" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_activity_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX "case_threads_channel_thread_idx" ON "case_threads" USING btree ("channel_id","thread_ts");