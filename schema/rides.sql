-- public.rides: the demo table `zingest up` creates, so that `zingest gen rides`
-- and `zingest send` have somewhere to land. Modelled on a cab-booking dataset
-- (YourCabs, Bangalore): one row per booking, with whether it was cancelled.
-- Idempotent: applied at every start.

CREATE TABLE IF NOT EXISTS public.rides (
    id                  bigint PRIMARY KEY,
    user_id             bigint NOT NULL,
    vehicle_model_id    integer NOT NULL,
    package_id          integer,                    -- hourly rentals only
    travel_type_id      smallint NOT NULL,          -- 1 long distance, 2 point to point, 3 hourly rental
    from_area_id        integer,
    to_area_id          integer,                    -- point to point only
    from_city_id        integer,
    to_city_id          integer,                    -- long distance only
    from_date           timestamptz NOT NULL,       -- pick-up time
    to_date             timestamptz,                -- return time, when booked
    online_booking      boolean NOT NULL,
    mobile_site_booking boolean NOT NULL,
    booking_created     timestamptz NOT NULL,
    from_lat            double precision,
    from_long           double precision,
    to_lat              double precision,
    to_long             double precision,
    car_cancellation    boolean NOT NULL
);
