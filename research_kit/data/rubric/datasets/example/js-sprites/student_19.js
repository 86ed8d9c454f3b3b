var robot = createSprite(200, 200);
robot.setAnimation("robot");
robot.scale = 0.5;

function draw() {
  background("silver");
  if (keyDown("left")) {
    robot.x = robot.x - 4;
  }
  if (keyDown("right")) {
    robot.x = robot.x + 4;
  }
  if (robot.x < 0) {
    robot.x = 0;
  }
  if (robot.x > 400) {
    robot.x = 400;
  }
  drawSprites();
}
