//! A Meal Delivery Routing Problem instance (Reyes et al. 2018): restaurants, orders and
//! couriers on a plane in metres, times in whole minutes from the start of the day, and the
//! instance's parameters. Read from the authors' tab-separated files.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};

/// A point on the instance's plane, in metres.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// East, metres.
    pub x: f64,
    /// North, metres.
    pub y: f64,
}

impl Point {
    /// Straight-line distance in metres.
    pub fn distance(self, other: Point) -> f64 {
        (self.x - other.x).hypot(self.y - other.y)
    }

    /// The point a `share` (0–1) of the way to `other`.
    pub fn towards(self, other: Point, share: f64) -> Point {
        let s = share.clamp(0.0, 1.0);
        Point {
            x: self.x + (other.x - self.x) * s,
            y: self.y + (other.y - self.y) * s,
        }
    }
}

/// `instance_parameters.txt`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Travel speed, metres per minute.
    pub metres_per_minute: f64,
    /// Pickup service minutes (half before the pickup time, half after).
    pub pickup_service: f64,
    /// Drop-off service minutes (half before the drop-off time, half after).
    pub dropoff_service: f64,
    /// Target click-to-door minutes.
    pub target: f64,
    /// Maximum click-to-door minutes.
    pub max_click_to_door: f64,
    /// Pay per order delivered.
    pub pay_per_order: f64,
    /// Guaranteed pay per hour on duty.
    pub pay_per_hour: f64,
}

/// A restaurant: where orders are picked up.
#[derive(Debug, Clone, PartialEq)]
pub struct Restaurant {
    /// Its id (`r1`).
    pub id: String,
    /// Where it is.
    pub at: Point,
}

/// An order: known from `placement`, ready at its restaurant from `ready`, delivered at `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// Its id (`o1`).
    pub id: String,
    /// The customer (drop-off).
    pub at: Point,
    /// Minute it is placed (known).
    pub placement: f64,
    /// Index of its restaurant in [`Instance::restaurants`].
    pub restaurant: usize,
    /// Minute it is ready for pickup.
    pub ready: f64,
}

/// A courier's shift.
#[derive(Debug, Clone, PartialEq)]
pub struct Courier {
    /// Its id (`c1`).
    pub id: String,
    /// Where it starts.
    pub at: Point,
    /// Minute it comes on duty.
    pub on: f64,
    /// Minute after which it takes no new pickup.
    pub off: f64,
}

/// A whole instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The directory name (`0o100t100s1p100`).
    pub name: String,
    /// Parameters.
    pub params: Params,
    /// Restaurants.
    pub restaurants: Vec<Restaurant>,
    /// Orders.
    pub orders: Vec<Order>,
    /// Couriers.
    pub couriers: Vec<Courier>,
}

/// The data rows of a tab-separated file with a header line, split on white space.
fn rows(dir: &Path, file: &str, columns: usize) -> anyhow::Result<Vec<Vec<String>>> {
    let path = dir.join(file);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        if fields.len() < columns {
            bail!(
                "{}:{}: expected {columns} columns, found {}",
                path.display(),
                n + 1,
                fields.len()
            );
        }
        out.push(fields);
    }
    Ok(out)
}

fn num(field: &str, what: &str) -> anyhow::Result<f64> {
    let v: f64 = field
        .parse()
        .with_context(|| format!("{what}: {field:?} is not a number"))?;
    anyhow::ensure!(v.is_finite(), "{what}: {field:?} is not finite");
    Ok(v)
}

impl Instance {
    /// A one-courier, one-order day for unit tests: restaurant 1 km east of the courier,
    /// customer 550 m north of it, 100 m a minute, placed at minute 3, ready at `ready`.
    #[cfg(test)]
    pub(crate) fn one_order(ready: f64) -> Instance {
        Instance {
            name: "t".into(),
            params: Params {
                metres_per_minute: 100.0,
                pickup_service: 4.0,
                dropoff_service: 4.0,
                target: 40.0,
                max_click_to_door: 90.0,
                pay_per_order: 10.0,
                pay_per_hour: 15.0,
            },
            restaurants: vec![Restaurant {
                id: "r1".into(),
                at: Point { x: 1000.0, y: 0.0 },
            }],
            orders: vec![Order {
                id: "o1".into(),
                at: Point {
                    x: 1000.0,
                    y: 550.0,
                },
                placement: 3.0,
                restaurant: 0,
                ready,
            }],
            couriers: vec![Courier {
                id: "c1".into(),
                at: Point { x: 0.0, y: 0.0 },
                on: 0.0,
                off: 100.0,
            }],
        }
    }

    /// Index of each order by id.
    pub fn order_index(&self) -> HashMap<&str, usize> {
        self.orders
            .iter()
            .enumerate()
            .map(|(i, o)| (o.id.as_str(), i))
            .collect()
    }

    /// Read an instance directory (`restaurants.txt`, `orders.txt`, `couriers.txt`,
    /// `instance_parameters.txt`).
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let p = rows(dir, "instance_parameters.txt", 7)?;
        let p = p.first().context("instance_parameters.txt has no values")?;
        let params = Params {
            metres_per_minute: num(&p[0], "meters_per_minute")?,
            pickup_service: num(&p[1], "pickup service minutes")?,
            dropoff_service: num(&p[2], "dropoff service minutes")?,
            target: num(&p[3], "target click-to-door")?,
            max_click_to_door: num(&p[4], "maximum click-to-door")?,
            pay_per_order: num(&p[5], "pay per order")?,
            pay_per_hour: num(&p[6], "guaranteed pay per hour")?,
        };
        anyhow::ensure!(
            params.metres_per_minute > 0.0,
            "meters_per_minute must be positive"
        );
        let restaurants: Vec<Restaurant> = rows(dir, "restaurants.txt", 3)?
            .into_iter()
            .map(|r| {
                Ok(Restaurant {
                    at: Point {
                        x: num(&r[1], "restaurant x")?,
                        y: num(&r[2], "restaurant y")?,
                    },
                    id: r[0].clone(),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let by_id: HashMap<&str, usize> = restaurants
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.as_str(), i))
            .collect();
        let orders: Vec<Order> = rows(dir, "orders.txt", 6)?
            .into_iter()
            .map(|o| {
                let restaurant = *by_id
                    .get(o[4].as_str())
                    .with_context(|| format!("order {}: unknown restaurant {}", o[0], o[4]))?;
                let order = Order {
                    at: Point {
                        x: num(&o[1], "order x")?,
                        y: num(&o[2], "order y")?,
                    },
                    placement: num(&o[3], "placement_time")?,
                    restaurant,
                    ready: num(&o[5], "ready_time")?,
                    id: o[0].clone(),
                };
                anyhow::ensure!(
                    order.ready >= order.placement,
                    "order {}: ready before it is placed",
                    order.id
                );
                Ok(order)
            })
            .collect::<anyhow::Result<_>>()?;
        let couriers: Vec<Courier> = rows(dir, "couriers.txt", 5)?
            .into_iter()
            .map(|c| {
                Ok(Courier {
                    at: Point {
                        x: num(&c[1], "courier x")?,
                        y: num(&c[2], "courier y")?,
                    },
                    on: num(&c[3], "on_time")?,
                    off: num(&c[4], "off_time")?,
                    id: c[0].clone(),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        anyhow::ensure!(!orders.is_empty(), "the instance has no order");
        anyhow::ensure!(!couriers.is_empty(), "the instance has no courier");
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "instance".to_owned());
        Ok(Self {
            name,
            params,
            restaurants,
            orders,
            couriers,
        })
    }

    /// Travel minutes between two points: `ceil(euclidean metres / metres per minute)`.
    pub fn travel(&self, a: Point, b: Point) -> f64 {
        (a.distance(b) / self.params.metres_per_minute).ceil()
    }

    /// Where an order is picked up.
    pub fn pickup_of(&self, order: &Order) -> Point {
        self.restaurants[order.restaurant].at
    }

    /// The click-to-door of an order served at once by a courier waiting at its restaurant:
    /// (ready − placement) + half the pickup service + the ride + half the drop-off service.
    pub fn ideal_click_to_door(&self, order: &Order) -> f64 {
        (order.ready - order.placement)
            + self.params.pickup_service / 2.0
            + self.travel(self.pickup_of(order), order.at)
            + self.params.dropoff_service / 2.0
    }

    /// Every point of the instance (restaurants, customers, courier starts).
    pub fn points(&self) -> impl Iterator<Item = Point> + '_ {
        self.restaurants
            .iter()
            .map(|r| r.at)
            .chain(self.orders.iter().map(|o| o.at))
            .chain(self.couriers.iter().map(|c| c.at))
    }

    /// Write this instance in the authors' format (for tests and synthetic days).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let p = &self.params;
        std::fs::write(
            dir.join("instance_parameters.txt"),
            format!(
                "meters_per_minute\tpickup service minutes\tdropoff service minutes\ttarget click-to-door\tmaximum click-to-door\tpay per order\tguaranteed pay per hour\n{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                p.metres_per_minute,
                p.pickup_service,
                p.dropoff_service,
                p.target,
                p.max_click_to_door,
                p.pay_per_order,
                p.pay_per_hour
            ),
        )?;
        let mut r = String::from("restaurant\tx\ty\n");
        for x in &self.restaurants {
            r.push_str(&format!("{}\t{}\t{}\n", x.id, x.at.x, x.at.y));
        }
        std::fs::write(dir.join("restaurants.txt"), r)?;
        let mut o = String::from("order\tx\ty\tplacement_time\trestaurant\tready_time\n");
        for x in &self.orders {
            o.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\n",
                x.id, x.at.x, x.at.y, x.placement, self.restaurants[x.restaurant].id, x.ready
            ));
        }
        std::fs::write(dir.join("orders.txt"), o)?;
        let mut c = String::from("courier\tx\ty\ton_time\toff_time\n");
        for x in &self.couriers {
            c.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\n",
                x.id, x.at.x, x.at.y, x.on, x.off
            ));
        }
        std::fs::write(dir.join("couriers.txt"), c)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn travel_time_is_the_ceiling_of_whole_minutes() {
        let inst = Instance {
            name: "t".into(),
            params: Params {
                metres_per_minute: 320.0,
                pickup_service: 4.0,
                dropoff_service: 4.0,
                target: 40.0,
                max_click_to_door: 90.0,
                pay_per_order: 10.0,
                pay_per_hour: 15.0,
            },
            restaurants: vec![],
            orders: vec![],
            couriers: vec![],
        };
        let o = Point { x: 0.0, y: 0.0 };
        assert_eq!(inst.travel(o, o), 0.0);
        assert_eq!(inst.travel(o, Point { x: 320.0, y: 0.0 }), 1.0);
        assert_eq!(inst.travel(o, Point { x: 320.5, y: 0.0 }), 2.0);
        assert_eq!(inst.travel(o, Point { x: 300.0, y: 400.0 }), 2.0);
    }
}
